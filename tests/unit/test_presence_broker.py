"""The Broker seam's subscription queue (presence.broker); the backends' contract is tests/contract."""

from __future__ import annotations

from presence.broker import Envelope, Gap, Kind, Subscription


async def test_an_overflowing_subscription_keeps_one_gap_and_what_follows() -> None:
    subscription = Subscription("r", max_messages=3)
    for n in range(4):  # the fourth overflows: the three queued and itself give way to one Gap
        subscription.deliver(Envelope("a", Kind.UPDATE, bytes([n])))
    subscription.gap("resubscribed")  # folded into the pending Gap
    subscription.deliver(Envelope("a", Kind.UPDATE, b"next"))
    batch = await subscription.next_batch()
    assert batch == [Gap("subscriber overflow"), Envelope("a", Kind.UPDATE, b"next")]

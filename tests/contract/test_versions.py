"""Snapshot versions for the REST history (issue 10): who made a named version, and retention by count and
age. One body per behaviour, run against every DocumentStore backend."""

from __future__ import annotations

import pytest

from persistence.base import DocumentStore
from tests.support.documents import fold_here, typing_updates

# Every automatic version is "old" by the time the next compaction runs: age pruning without a sleep.
TINY_AGE = {"keep_versions": 10, "max_version_age": 1e-6}


async def test_a_named_version_records_its_author_and_automatic_ones_none(store: DocumentStore) -> None:
    _, updates = typing_updates(2)
    await store.append_many([("r", updates[0])])
    named = await store.compact("r", fold=fold_here, label="first draft", created_by="alice")
    assert named is not None and (named.label, named.created_by) == ("first draft", "alice")
    await store.append_many([("r", updates[1])])
    automatic = await store.compact("r", fold=fold_here)
    assert automatic is not None and (automatic.label, automatic.created_by) == (None, None)
    listed = await store.versions("r")
    assert [(v.version, v.label, v.created_by) for v in listed] == [
        (automatic.version, None, None),
        (named.version, "first draft", "alice"),
    ]
    assert listed[1].size == named.size and listed[1].created_at == pytest.approx(named.created_at, abs=1e-3)


@pytest.mark.parametrize("store_options", [TINY_AGE], indirect=True)
async def test_automatic_versions_past_the_age_are_pruned_but_the_newest_and_named_ones_stay(
    store: DocumentStore,
) -> None:
    _, updates = typing_updates(5)
    await store.append_many([("r", updates[0])])
    await store.compact("r", fold=fold_here)
    await store.append_many([("r", updates[1])])
    named = await store.compact("r", fold=fold_here, label="keep me", created_by="bob")
    for update in updates[2:]:
        await store.append_many([("r", update)])
        await store.compact("r", fold=fold_here)
    versions = await store.versions("r")
    # Far below the count limit, but every automatic version but the newest is older than the age.
    assert [(v.version, v.label) for v in versions] == [(5, None), (2, "keep me")]
    assert named is not None and await store.read_version("r", named.version) is not None
    stored = await store.load("r")
    assert stored is not None and stored.snapshot_version == 5


async def test_without_an_age_limit_only_the_count_prunes(store: DocumentStore) -> None:
    # The fixture keeps 3 automatic versions and sets no age limit.
    _, updates = typing_updates(4)
    for update in updates:
        await store.append_many([("r", update)])
        await store.compact("r", fold=fold_here)
    assert [v.version for v in await store.versions("r")] == [4, 3, 2]

"""Everything between replicas: fan-out of rooms' updates and awareness, and the presence registry.

The core defines what this package implements and how it may touch a room: the ``Replication`` hooks
and the ``SharedRoom`` interface (collab_server/replication.py). The modules, in the order an edit
meets them on its way to another replica (docs/replication.md tells the whole way):

    factory.py             picks embedded.py (memory://) or broker_replication.py (redis://)
    broker_replication.py  the hooks RoomManager calls; assembles the parts below
    outbox.py              publishing: queued, batched, two lanes
    broker.py              the Broker seam: Envelope, Kind, Gap, Subscription
    redis_broker.py        Redis pub/sub; the names and the message format are in redis_wire.py
    local.py               in-process broker and registry (embedded mode, tests)
    dispatch.py            each room's consumer on the receiving replica
    repair.py, sync.py     the state-vector exchange that repairs what was lost
    awareness_relay.py     cursors across replicas
    liveness.py            heartbeat, and what happens when a replica dies
    tracker.py, registry.py, redis_registry.py   the presence registry: who is in which room
    link.py                the per-room state the parts share
"""

"""The CRDT engine: every call into pycrdt (Yrs) on bytes a client or the store supplied.

Yrs segfaults, aborts, panics or loops forever on some malformed updates. Python can catch none of the
first two and cannot interrupt the last, so the process that owns everyone's sockets never runs Yrs on
untrusted bytes. The documents of rooms live in supervised worker processes instead:

- ``engine``     the ``DocumentEngine`` port rooms and the store's compaction talk to, and its results
- ``documents``  a worker's documents: one transaction per update, rebuilt after any failure
- ``codec``      the binary framing of requests and answers over the pipes (no pickle)
- ``worker``     a worker process's main loop (``python -m collab_server.crdt.worker``)
- ``process``    one worker process seen from the server: spawn, send, read, kill
- ``pool``       N workers, rooms by a stable hash of their name, one request per worker per event-loop
                 tick, the watchdog and the recovery (restart, rebuild, find the poison)
- ``isolation``  loading and folding row by row to single out stored rows that kill a worker
- ``poison``     updates recently found poisonous, refused without reaching a worker again
- ``local``      the same engine in-process, for unit tests only
"""

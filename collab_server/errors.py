"""The one error tree of the server.

    CollabError
    ├── ConfigError          a setting is missing or malformed (names the key)
    ├── ProtocolError        a peer sent bytes that are not valid y-websocket messages
    ├── LimitExceeded        a peer passed a rate or quota (transient: it may come back later)
    │   ├── RateLimited          bytes or messages per second, rooms opened per minute
    │   ├── DocumentTooLarge     the document would pass its size quota
    │   └── RoomOverloaded       the room holds as many awareness states as it may
    ├── RoomNotFound
    ├── AuthError
    ├── StoreError           the document store failed
    │   ├── StoreUnavailable     cannot reach the store right now (retryable)
    │   ├── StoreOverloaded      the write buffer is full; new writes are refused until it drains
    │   └── CorruptDocument      stored bytes could not be decoded (never served as an empty doc)
    ├── BrokerError          the fan-out broker failed
    └── ExportError

Backends translate driver errors at the edge (``raise StoreUnavailable(...) from exc``) so callers only
ever see these types. The websocket endpoint maps them to close codes, one peer at a time.
"""


class CollabError(Exception):
    """Base class of every error the server raises on purpose."""


class ConfigError(CollabError):
    """A setting could not be read; the message names the ``COLLAB_*`` key."""


class ProtocolError(CollabError):
    """A peer sent something that is not a valid y-websocket message."""


class LimitExceeded(CollabError):
    """A peer passed a rate or a quota; the message says which, in words meant for the client."""


class RateLimited(LimitExceeded):
    pass


class DocumentTooLarge(LimitExceeded):
    pass


class RoomOverloaded(LimitExceeded):
    pass


class RoomNotFound(CollabError):
    pass


class AuthError(CollabError):
    pass


class StoreError(CollabError):
    pass


class StoreUnavailable(StoreError):
    """The store cannot be reached right now; the operation may succeed later."""


class StoreOverloaded(StoreError):
    """Too many appends are waiting for the store; new writes are refused until it catches up."""


class CorruptDocument(StoreError):
    """Stored bytes for a room could not be decoded. The stored bytes are left untouched."""


class BrokerError(CollabError):
    pass


class ExportError(CollabError):
    pass

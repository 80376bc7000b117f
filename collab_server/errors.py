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
    ├── ExportError
    └── DocumentError        a document, update or JSON patch given to the document logic is unusable
                             (``code`` says why: malformed_update, too_large, too_deep, invalid_patch, ...)

Backends translate driver errors at the edge (``raise StoreUnavailable(...) from exc``) so callers only
ever see these types. The websocket endpoint maps them to the ``CloseCode`` below, one peer at a time.
"""

from enum import IntEnum


class CloseCode(IntEnum):
    """Every websocket close code the server sends. The y-websocket client stops reconnecting on
    4400-4499 (permanent) and reconnects, then resyncs, on everything else (transient)."""

    UNSUPPORTED_DATA = 1003  # a text frame: the protocol is binary
    TOO_BIG = 1009  # a frame over the size limit (sent by the websocket layer itself)
    INTERNAL_ERROR = 1011  # the room could not be loaded, or an unexpected error
    RESTARTING = 1012  # the server is shutting down: reconnect (to another replica)
    TRY_AGAIN_LATER = 1013  # too slow a reader, or the store is not taking writes
    PROTOCOL_ERROR = 4400  # malformed room name or message, or an update the CRDT library cannot apply
    # Refusals for a quota: 45xx, the y-websocket client's "try again later" range (mirroring HTTP codes).
    OVERLOADED = 4503  # the room holds as many awareness states as it may
    TOO_LARGE = 4513  # the update would take the document past its size quota
    RATE_LIMITED = 4529  # too many bytes or messages per second, or rooms opened per minute from one address


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


class DocumentError(CollabError):
    """An update, document or JSON patch given to the document logic cannot be used.

    ``code`` is a short machine-readable reason (the REST layer's ``error`` field); the message is the detail.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail

    def __repr__(self) -> str:
        return f"DocumentError({self.code!r}, {self.detail!r})"

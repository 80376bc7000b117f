"""The one error tree of the server.

    CollabError
    ├── ConfigError          a setting is missing or malformed (names the key)
    ├── ProtocolError        a peer sent bytes that are not valid y-websocket messages
    ├── LimitExceeded        a peer passed a rate or quota (transient: it may come back later)
    │   ├── RateExceeded         bytes or messages per second, rooms opened per minute
    │   ├── DocumentTooLarge     the document would pass its size quota
    │   └── RoomOverloaded       the room holds as many awareness states as it may
    ├── RoomNotFound         no such room (registered mode, deleted, or private and not yours)
    ├── AuthError            no, malformed, badly signed or expired credentials
    │   ├── Forbidden            authenticated, but this principal may not do this
    │   ├── RateLimited          too many password / invite attempts (carries retry_after)
    │   └── AuthUnavailable      the identity provider's keys cannot be fetched right now (retryable)
    ├── RequestError         a REST request is invalid (bad body or parameter, conflict, too large)
    │   ├── Conflict             the request contradicts the current state (e.g. the owner's own role)
    │   ├── NotFound             a resource inside a room does not exist (e.g. a document version)
    │   └── PayloadTooLarge      a request body over the size limit
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
    UNAUTHENTICATED = 4401  # no, malformed, badly signed or expired token
    FORBIDDEN = 4403  # no right to this room (or the right was revoked while connected)
    NO_SUCH_ROOM = 4404  # registered mode and the room was never created, or it was deleted
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


class RateExceeded(LimitExceeded):
    """A peer sends faster than its rates, or one address opens rooms faster than its quota."""


class DocumentTooLarge(LimitExceeded):
    pass


class RoomOverloaded(LimitExceeded):
    pass


class RoomNotFound(CollabError):
    """The room does not exist, or it is private and the caller may not learn that it does."""


class AuthError(CollabError):
    """The caller is not authenticated: no token, or one that is malformed, badly signed or expired."""


class Forbidden(AuthError):
    """The caller is authenticated but has no right to do this."""


class RateLimited(AuthError):
    """Too many attempts from one client on one room; ``retry_after`` is in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthUnavailable(AuthError):
    """A token names a key the server cannot fetch right now (JWKS unreachable): retry later."""


class RequestError(CollabError):
    """A REST request is invalid; ``code`` is the machine-readable error, ``status`` the HTTP status."""

    code = "bad_request"
    status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class Conflict(RequestError):
    code = "conflict"
    status = 409


class NotFound(RequestError):
    code = "not_found"
    status = 404


class PayloadTooLarge(RequestError):
    code = "payload_too_large"
    status = 413


class StoreError(CollabError):
    pass


class StoreUnavailable(StoreError):
    """The store cannot be reached right now; the operation may succeed later."""


class StoreOverloaded(StoreError):
    """Too many appends are waiting for the store; new writes are refused until it catches up."""


class FoldFailed(StoreError):
    """The engine could not fold a room's stored rows into a snapshot (they crash or stall it). The store
    is fine and holds every row; only the compaction is not possible."""


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

"""Values that must never be printed: keys, tokens and URLs that may carry a password.

A ``Secret`` shows itself masked in ``repr``, ``str`` and f-strings, so a settings object, a log line or
``--help`` can never leak it by accident; the one way to the value is ``reveal()``, called where the value
is really used (a driver's connect call, a signature check). ``SecretURL`` masks only the password, so the
startup log can still say which database or Redis it talks to.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

_MASK: Final = "***"


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``; everything else kept, for logs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # an unparsable port, say: show nothing of it rather than risk a leak
        return _MASK
    if password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username or ''}:{_MASK}@{host}").geturl()


class Secret:
    """A string setting shown masked everywhere; ``reveal()`` gives the value. Empty means unset."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def masked(self) -> str:
        return _MASK if self._value else ""

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._value == self._value

    def __hash__(self) -> int:
        return hash((type(self), self._value))

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.masked()!r})"


class SecretURL(Secret):
    """A URL whose password is masked; scheme, user, host and path stay visible."""

    __slots__ = ()

    def masked(self) -> str:
        return redact_url(self._value)

    @property
    def scheme(self) -> str:
        return urlsplit(self._value).scheme

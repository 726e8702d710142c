"""The one error tree of bbox-lfm.

Every error the toolkit raises derives from :class:`BBoxError`, and each class also
inherits the builtin a caller would naturally catch::

    BBoxError (Exception)
    +-- ConfigError (ValueError)            bad parameter: which one, what it must be, what it got
    +-- CapabilityError (ValueError)        the provider lacks what a method needs
    +-- BudgetExhausted (RuntimeError)      a budget limit would be exceeded; carries the figures
    +-- CacheError (RuntimeError)
    |   +-- CacheMiss (LookupError)         replay mode and the query is not cached
    |   +-- CacheCorrupt (OSError)          the cache file is not a bbox-lfm cache
    +-- ProviderError (RuntimeError)        the provider answered with an error
        +-- APIConnectionError (ConnectionError)   no answer at all (retried)
        |   +-- APITimeoutError (TimeoutError)     (retried)
        |   +-- TruncatedResponseError             a 200 whose body is cut off, not JSON (retried)
        +-- APIStatusError                  an HTTP error status, with ``status_code``
        |   +-- BadRequestError (ValueError)         400, 404, 413, 422 (not retried)
        |   +-- AuthenticationError (PermissionError) 401, 403 (not retried)
        |   +-- RateLimitError                        429 (retried, honours Retry-After)
        |   +-- ServerError                           5xx, 408, 409 (retried)
        +-- MalformedResponseError (ValueError)      the answer is not what the API documents

SDK and HTTP errors are translated at the adapter boundary with ``raise ... from exc``;
no message ever contains a credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BBoxError",
    "BadRequestError",
    "BudgetExhausted",
    "CacheCorrupt",
    "CacheError",
    "CacheMiss",
    "CapabilityError",
    "ConfigError",
    "MalformedResponseError",
    "ProviderError",
    "RateLimitError",
    "ServerError",
    "TruncatedResponseError",
    "check",
]


class BBoxError(Exception):
    """Base class of every error bbox-lfm raises."""


class ConfigError(BBoxError, ValueError):
    """A parameter has a value it must not have."""


def check(ok: bool, name: str, must: str, got: Any) -> None:
    """Raise :class:`ConfigError` in the project's one message shape unless ``ok``."""
    if not ok:
        raise ConfigError(f"{name} must be {must}; got {got!r}")


class CapabilityError(BBoxError, ValueError):
    """The provider lacks a capability that the caller needs."""

    def __init__(self, capability: str, provider: str, *, needed_by: str = "", hint: str = ""):
        self.capability = capability
        self.provider = provider
        who = f"{needed_by} needs" if needed_by else "this needs"
        msg = f"{who} the capability {capability!r}, which provider {provider!r} does not have"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)


class BudgetExhausted(BBoxError, RuntimeError):
    """Sending the query would exceed a budget limit. Nothing was sent.

    ``unit`` is the limit that would be exceeded, ``limit`` its value, ``spent`` what has been
    spent of it, ``requested`` what the refused query needed, ``report`` the whole budget report.
    """

    def __init__(self, unit: str, limit: float, spent: float, requested: float,
                 report: Mapping[str, Any] | None = None):
        self.unit = unit
        self.limit = limit
        self.spent = spent
        self.requested = requested
        self.report = dict(report or {})
        super().__init__(
            f"budget for {unit} exhausted: spent {spent:g} of {limit:g}, the query needs {requested:g}"
        )


class CacheError(BBoxError, RuntimeError):
    """Something is wrong with the cache."""


class CacheMiss(CacheError, LookupError):
    """Replay mode found no cached answer for the query; nothing was sent."""

    def __init__(self, key: str, description: str, hint: str | None = None):
        self.key = key
        self.description = description
        self.hint = hint  # what differs from the nearest recorded query, when the store could tell
        super().__init__(f"replay mode: no cached answer for {description} (key {key[:16]}); nothing was sent"
                         + (f"; {hint}" if hint else ""))


class CacheCorrupt(CacheError, OSError):
    """The cache file is damaged or is not a bbox-lfm cache; it is left untouched."""


class ProviderError(BBoxError, RuntimeError):
    """The provider could not give a usable answer."""

    #: attempts made before giving up (the retry layer sets it; the budget counts the retries)
    attempts: int = 1


class APIConnectionError(ProviderError, ConnectionError):
    """The provider could not be reached."""


class APITimeoutError(APIConnectionError, TimeoutError):
    """The provider did not answer in time."""


class TruncatedResponseError(APIConnectionError):
    """The provider answered 200 with a body that is not whole JSON (cut off on the way).

    A transport fault, like a dropped connection: the query is sent again. Only an answer that
    is whole JSON and still not what the API documents is a :class:`MalformedResponseError`.
    """


class APIStatusError(ProviderError):
    """The provider answered with an HTTP error status."""

    def __init__(self, message: str, *, status_code: int, retry_after: float | None = None):
        self.status_code = status_code
        self.retry_after = retry_after
        super().__init__(f"HTTP {status_code}: {message}")


class BadRequestError(APIStatusError, ValueError):
    """The provider rejected the request as invalid."""


class AuthenticationError(APIStatusError, PermissionError):
    """The provider refused the credentials."""


class RateLimitError(APIStatusError):
    """HTTP 429: too many requests or tokens."""


class ServerError(APIStatusError):
    """HTTP 5xx, 408 or 409: worth another try."""


class MalformedResponseError(ProviderError, ValueError):
    """The provider's answer does not have the documented shape."""

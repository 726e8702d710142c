"""Keep credentials out of every message, log line, cache entry and cassette."""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Iterable

__all__ = ["install_log_redaction", "redact", "scrub_exception"]

# Key-shaped strings that providers echo back (OpenAI's 401 quotes a masked key).
_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-*]{4,}"),
    re.compile(r"(?i)(bearer\s+)[^\s\"']+"),
    re.compile(r"(?i)((?:api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every given secret and every key-shaped string replaced by ``***``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    text = _PATTERNS[0].sub("***", text)
    for pat in _PATTERNS[1:]:
        text = pat.sub(lambda m: m.group(1) + "***", text)
    return text


def scrub_exception(exc: BaseException | None, secrets: Iterable[str | None] = ()) -> None:
    """Redact ``exc`` and every exception it chains, in place (``args``, ``message``, ``body``).

    A provider may quote the key back in its error (OpenAI's 401 does); the SDK's exception is
    kept as the ``__cause__`` of ours for debugging, and a traceback prints it, so it is cleaned
    before it is chained.
    """
    secrets = list(secrets)
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in exc.args)
        for name in ("message", "body"):
            value = getattr(exc, name, None)
            if isinstance(value, str):
                setattr(exc, name, redact(value, secrets))
            elif isinstance(value, (dict, list)):
                text = redact(json.dumps(value), secrets)
                try:
                    setattr(exc, name, json.loads(text))
                except ValueError:
                    setattr(exc, name, text)
        exc = exc.__cause__ or exc.__context__


class _RedactFilter(logging.Filter):
    """Rewrites log records so that no secret survives in the message or the traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)), self.secrets)
            record.exc_info = None
        return True


_FILTER = _RedactFilter()
# the loggers of the HTTP stack underneath the adapter (filters apply where a record is made)
_LOGGERS = ("openai", "openai._base_client", "httpx", "httpcore.connection", "httpcore.http11")


def install_log_redaction(secret: str | None) -> None:
    """Redact ``secret`` (and key-shaped strings) from everything the HTTP stack logs."""
    if secret:
        _FILTER.secrets.add(secret)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)

"""Keep credentials out of every message, log line, cache entry and cassette."""

from __future__ import annotations

import re
from typing import Iterable

__all__ = ["redact"]

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

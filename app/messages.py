"""Text a visitor sees, in a visitor's words: no exception class names, no tracebacks, no paths
of this server. The library's messages are written for Python callers (a class name or a full
path helps a developer); everything the page or the API shows passes through
:func:`for_visitor` at the door, and the server log keeps the original wording.
"""
from __future__ import annotations

import logging
import re
import secrets

log = logging.getLogger(__name__)

_CLASS = r"(?:[a-z_][\w]*\.)*[A-Z]\w*(?:Error|Exception|Warning|Exit|Interrupt)\b"
_PAREN_CLASS = re.compile(rf"\s*\({_CLASS}[^()]*\)")                  # " (KeyError: 'x')"
_LEADING_CLASS = re.compile(rf"(^|(?<=[:;.] )){_CLASS}:\s*")            # "OSError: ..." -> "..."
_BARE_CLASS = re.compile(rf"(?:\b[Aa]n? )?{_CLASS}")                  # "a torch.OutOfMemoryError" -> "an error"
# An absolute path (not part of a URL, a Hub id "owner/name", a fraction "3/200" or "$VAR/...").
_PATH = re.compile(r"(?<![\w.:/~$-])(?:/[\w.@+-]+)+/?")
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|\bFile \"")
# What a visitor must never read; tests/reliability/test_messages.py asserts it on every refusal.
FORBIDDEN = re.compile(rf"{_CLASS}|\bException\b|\b[A-Z]\w*Params\b|Traceback|\.py\b|(?<![\w.:/~$-])/(?:[\w.@+-]+/)+")


def for_visitor(text: str) -> str:
    """``text`` without exception class names, tracebacks or server paths (a path becomes its
    last part: ``/srv/models/ft-a/model.safetensors`` -> ``model.safetensors``). When anything
    changes, the original goes to the log."""
    text = str(text)
    if _TRACEBACK.search(text):
        ref = reference()
        log.warning("a traceback was on its way to a visitor [ref %s]: %s", ref, text)
        return f"something went wrong on the server; it logged the details (reference {ref})"
    out = _PAREN_CLASS.sub("", text)
    out = _LEADING_CLASS.sub(r"\1", out)
    out = _BARE_CLASS.sub("an error", out)
    out = _PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] or "/", out)
    out = re.sub(r"(\w+)\.py\b", r"\1", out)
    if out != text:
        log.info("shown to a visitor as %r; in full: %s", out, text)
    return out


def reference() -> str:
    """A short id that ties a message on the page to its entry in the server log."""
    return secrets.token_hex(3)

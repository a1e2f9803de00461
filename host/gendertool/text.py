"""Text from a device, made safe to show on a terminal.

A device (or anything on a serial port) can send escape sequences that move the cursor,
rewrite the title, or worse. Every C0 control except tab and newline, DEL, every C1 control
(0x80-0x9f: 0x9b is CSI on its own) and the bidirectional overrides are shown as visible
escapes instead. C0 controls become ``\x1b``; the others ``\u009b``, which is also a valid
JSON escape, so a JSON line stays JSON after this. Nothing is ever dropped silently.
"""

from __future__ import annotations

import re

_C0 = "\x00-\x08\x0b-\x1f"  # all but \t (0x09) and \n (0x0a)
_WIDE = "\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
_UNSAFE = re.compile(f"[{_C0}{_WIDE}]")
_UNSAFE_LINE = re.compile(f"[{_C0}\n{_WIDE}]")  # one line: a newline is escaped too


def _escape(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x20 else f"\\u{c:04x}"


def escape_control(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with every control character that a terminal would act on made visible."""
    pattern = _UNSAFE if keep_newlines else _UNSAFE_LINE
    return pattern.sub(_escape, text) if pattern.search(text) else text


def has_control(text: str) -> bool:
    """True when ``text`` holds a character :func:`escape_control` would escape (newline aside)."""
    return _UNSAFE.search(text) is not None


def shown_line(text: str, limit: int) -> str:
    """One device line for the terminal: escaped, and at most ``limit`` characters (+ a count)."""
    safe = escape_control(text, keep_newlines=False)
    if len(safe) <= limit:
        return safe
    return f"{safe[:limit]}... ({len(safe) - limit} more characters)"


def about(subject: str, message: str) -> str:
    """``subject: message``, unless the message names the subject already (a port named once,
    not three times, when errors wrap errors)."""
    return message if subject in message else f"{subject}: {message}"


def reason(message: str, subject: str) -> str:
    """``message`` without a leading ``subject``, its verb phrase ``disconnected`` and brackets:
    what remains to say about it when an outer message names the subject already."""
    rest = message.removeprefix(subject).strip()
    rest = rest.removeprefix("disconnected").strip()
    return rest[1:-1] if rest.startswith("(") and rest.endswith(")") else rest


def count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"

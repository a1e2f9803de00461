"""Counted nouns for messages: "1 label", "2 labels" (never "1 labels" or "label(s)")."""

from __future__ import annotations


def count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"

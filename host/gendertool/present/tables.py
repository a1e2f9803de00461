"""Formatting of figures and Rich tables/panels shared by the commands."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

# --------------------------------------------------------------------------- formatting


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units, like esptool and the ESP-IDF size report)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """0.0042 -> '4.2 ms', 75 -> '1 min 15 s'."""
    if math.isnan(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s"


def format_ms(value: float, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


# --------------------------------------------------------------------------- Rich views


def kv_table(rows: Iterable[tuple[str, Any]], title: str | None = None):
    """A two-column key/value table (summaries, chip info)."""
    from rich.table import Table

    table = Table(title=title, show_header=False, box=None, pad_edge=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(str(key), value if hasattr(value, "__rich_console__") else str(value))
    return table


def log_panel(lines: Iterable[str], title: str = "device log", height: int = 12):
    """The last ``height`` device log lines, dimmed, in a panel."""
    from rich.panel import Panel
    from rich.text import Text

    tail = list(lines)[-height:]
    text = Text("\n".join(tail) if tail else "(no log lines yet)", style="dim", overflow="ellipsis", no_wrap=True)
    return Panel(text, title=title, title_align="left", border_style="dim")

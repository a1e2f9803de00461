"""Live regions and progress bars on a console (no-ops without a terminal)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def live_view(console, enabled: bool = True, refresh_per_second: float = 8.0) -> Iterator[Any]:
    """A Rich Live region on ``console``; yields an object with ``update(renderable)``.

    Disabled (or on a non-terminal console) it yields a no-op updater, so callers never
    branch and redirected output never fills with redraws.
    """
    if not enabled or not console.is_terminal:
        yield _NullLive()
        return
    from rich.live import Live

    with Live(console=console, refresh_per_second=refresh_per_second, transient=False, redirect_stdout=False, redirect_stderr=False) as live:
        yield live


class _NullLive:
    def update(self, renderable: Any, *, refresh: bool = False) -> None:
        pass


def byte_progress(console, *, transient: bool = False):
    """A Rich Progress for byte transfers: bar, percentage, size, speed, elapsed."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )

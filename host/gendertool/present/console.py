"""Consoles whose text cannot act on the terminal."""

from __future__ import annotations

from rich.console import Console

from gendertool.text import escape_control


class SafeConsole(Console):
    """A Console whose text cannot act on the terminal.

    Device strings reach every table, log line and error message; Rich passes ESC, CSI, NUL and
    most other controls through. Here every text segment is escaped (gendertool.text) just
    before output, while Rich's own styling and cursor moves (control segments) stay intact.
    """

    def _render_buffer(self, buffer):
        from rich.segment import Segment


        return super()._render_buffer(
            seg if seg.control or not seg.text else Segment(escape_control(seg.text), seg.style, seg.control)
            for seg in buffer
        )


# stdout carries results (tables, JSON); stderr carries progress, logs and errors.
console = SafeConsole(highlight=False, emoji=False)  # user text like ":x:" stays text
err_console = SafeConsole(stderr=True, highlight=False, emoji=False)

"""Commands: sim (filled in by its issue)."""
from ._app import app  # noqa: F401

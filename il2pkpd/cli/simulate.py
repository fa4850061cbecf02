"""`il2pkpd simulate` (not yet registered: its issue is in progress)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the command to *app* (nothing yet)."""

"""`il2pkpd quickstart`: the README's main job on the bundled data."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the command to *app* (nothing yet)."""

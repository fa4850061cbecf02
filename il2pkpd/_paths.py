"""Where the bundled model files and datasets live (source checkout or installed wheel)."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PKG.parent / name, _PKG / "_bundled" / name):
        if candidate.is_dir():
            return candidate
    return _PKG.parent / name


MODELS_DIR = _find("models")
DATASETS_DIR = _find("datasets")

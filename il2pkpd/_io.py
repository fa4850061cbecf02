"""Atomic file output: a file either appears complete or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

COMPLETE_MARKER = "_COMPLETE"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success move it onto *path*.

    On any exception the temporary file is removed and *path* is left untouched.

    Examples
    --------
    >>> import pandas as pd, tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "x.csv"
    >>> with atomic_path(out) as tmp:
    ...     pd.DataFrame({"a": [1]}).to_csv(tmp, index=False)
    >>> out.read_text().splitlines()[0]
    'a'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write *text* to *path* atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write *data* to *path* atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def mark_incomplete(run_dir: str | os.PathLike) -> None:
    """Remove the completion marker of *run_dir* (call before writing any output)."""
    with contextlib.suppress(FileNotFoundError):
        (Path(run_dir) / COMPLETE_MARKER).unlink()


def mark_complete(run_dir: str | os.PathLike) -> None:
    """Write the completion marker of *run_dir* (call after every output is in place)."""
    atomic_write_text(Path(run_dir) / COMPLETE_MARKER, "complete\n")

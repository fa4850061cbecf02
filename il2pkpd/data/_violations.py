"""Collecting dataset problems so that all of them are reported at once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from il2pkpd.errors import DatasetError

VIOLATION_COLUMNS = ("rule", "column", "ID", "lines", "message")
_MAX_GROUPS_IN_MESSAGE = 12
_MAX_IN_SUMMARY = 5


def format_lines(lines: Iterable[int], max_groups: int | None = None) -> str:
    """Group line numbers into ranges: ``[5, 6, 7, 8, 9, 12] -> "5-9, 12"``.

    Parameters
    ----------
    lines : iterable of int
        File line numbers (any order, duplicates allowed).
    max_groups : int, optional
        Show at most this many groups, then ``"... (N more lines)"``.

    Examples
    --------
    >>> format_lines([12, 5, 6, 7, 8, 9])
    '5-9, 12'
    """
    values = sorted({int(v) for v in lines})
    groups: list[tuple[int, int]] = []
    for v in values:
        if groups and v == groups[-1][1] + 1:
            groups[-1] = (groups[-1][0], v)
        else:
            groups.append((v, v))
    shown = groups if max_groups is None else groups[:max_groups]
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in shown)
    if len(shown) < len(groups):
        rest = sum(b - a + 1 for a, b in groups[len(shown):])
        text += f", ... ({rest} more lines)"
    return text


def _fmt_value(v: object) -> str:
    if isinstance(v, float | np.floating):
        f = float(v)
        if np.isnan(f):
            return "missing"
        return f"{int(f)}" if f.is_integer() else f"{f:g}"
    return str(v)


class Violations:
    """Accumulates violations (rule, column, ID, lines, message) and warnings."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []
        self.warnings: list[str] = []
        self.notes: list[str] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, rule: str, column: str, message: str, *, id_: object = None,
            lines: Sequence[int] = ()) -> None:
        """Add one table-level violation (no per-row grouping)."""
        self._append(rule, column, id_, list(lines), message)

    def _append(self, rule: str, column: str, id_: object, lines: list[int], message: str
                ) -> None:
        where = column
        if lines:
            word = "line" if len(set(lines)) == 1 else "lines"
            where += f", {word} {format_lines(lines, _MAX_GROUPS_IN_MESSAGE)}"
        if id_ is not None:
            where += f" (ID {id_})"
        self.rows.append({"rule": rule, "column": column, "ID": id_,
                          "lines": format_lines(lines), "message": message,
                          "_full": f"{where}: {message}",
                          "_first": min(lines) if lines else 0})

    def add_rows(self, rule: str, column: str, mask: np.ndarray, ids: np.ndarray,
                 lines: np.ndarray, message: str, values: np.ndarray | None = None) -> None:
        """Add one violation per subject for the rows where *mask* is true.

        *message* is a template; ``{id}``, ``{lines}`` and ``{values}`` (up to three distinct
        offending values) are filled in. Rows with a missing ID are grouped under ``?``.
        """
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        idx = np.flatnonzero(mask)
        order: dict[object, list[int]] = {}
        for i in idx:
            key = ids[i]
            key = None if (isinstance(key, float) and np.isnan(key)) else key
            key = int(key) if key is not None else None
            order.setdefault(key, []).append(int(i))
        for key, rows in order.items():
            row_lines = lines[rows]
            vals = ""
            if values is not None:
                distinct: list[str] = []
                for v in values[rows]:
                    s = _fmt_value(v)
                    if s not in distinct:
                        distinct.append(s)
                vals = ", ".join(distinct[:3]) + (", ..." if len(distinct) > 3 else "")
            text = message.format(
                id="?" if key is None else key,
                lines=format_lines(row_lines, _MAX_GROUPS_IN_MESSAGE),
                values=vals,
            )
            self._append(rule, column, key, [int(v) for v in row_lines], text)

    def _sorted(self) -> list[dict[str, object]]:
        return sorted(self.rows, key=lambda r: r["_first"])  # stable: rule order within a line

    def table(self) -> pd.DataFrame:
        """The violations as a DataFrame with columns ``rule, column, ID, lines, message``,
        ordered by their first file line."""
        df = pd.DataFrame([{k: r[k] for k in VIOLATION_COLUMNS} for r in self._sorted()],
                          columns=list(VIOLATION_COLUMNS))
        df["ID"] = df["ID"].astype("Int64")
        return df

    def raise_if_any(self, source: str) -> None:
        """Raise :class:`~il2pkpd.errors.DatasetError` listing every violation, if any."""
        if not self.rows:
            return
        table = self.table()
        n_rules = table["rule"].nunique()
        message = (
            f"dataset {source} cannot be used: {len(table)} problem"
            f"{'s' if len(table) != 1 else ''} ({n_rules} rule{'s' if n_rules != 1 else ''}). "
            "Each row below names the rule, the column, the subject ID and the file lines "
            "(the header is line 1); fix them all and read the file again.\n"
            + "\n".join(f"  {r['_full']}" for r in self._sorted()[:_MAX_IN_SUMMARY])
            + (f"\n  ... and {len(self.rows) - _MAX_IN_SUMMARY} more (table below)"
               if len(self.rows) > _MAX_IN_SUMMARY else "")
        )
        raise DatasetError(message, violations=table)

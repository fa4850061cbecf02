"""The Dataset value: a validated NONMEM-style event table."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from il2pkpd.units import DataUnits


@dataclass(frozen=True, eq=False)
class Dataset:
    """A validated NONMEM-style dataset (one row per record, in file order).

    Attributes
    ----------
    df : pandas.DataFrame
        Canonical columns ``ID`` (int64), ``TIME`` (float64, time unit), ``AMT``, ``RATE``
        (amount, amount/time), ``II`` (float64, time unit), ``ADDL``, ``SS``, ``EVID``, ``CMT``,
        ``MDV`` (int64), ``DV`` (float64, NaN when missing), ``DVID`` (int64, 1 when the file has
        none), ``BLQ`` (bool: DV censored below ``LLOQ``), ``LLOQ`` (float64, NaN when none),
        ``LINE`` (int64, 1-based line in the file, header is line 1), then the covariates
        (float64, carried forward within a subject and backward for leading missing values).
    covariates : tuple of str
        Covariate column names, in file order.
    has_dvid : bool
        Whether the file had a DVID column.
    units : DataUnits
        The units the columns are in (after any conversion at reading).
    source : str
        Where the data came from (a path, or ``"<DataFrame>"``).
    warnings : tuple of str
        Problems that do not stop the analysis (for instance an ID that reappears after another
        ID: as NONMEM does, the later block is a separate subject; see :attr:`subject_index`).
    notes : tuple of str
        What the reader did that the user should know (columns dropped, defaults applied).
    """

    df: pd.DataFrame
    covariates: tuple[str, ...] = ()
    has_dvid: bool = False
    units: DataUnits = field(default_factory=DataUnits)
    source: str = "<DataFrame>"
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def subject_index(self) -> np.ndarray:
        """0-based subject number of each row (int64, shape ``(n_rows,)``).

        Subjects are runs of consecutive rows with the same ID, as in NONMEM: an ID that
        reappears after another ID starts a new subject (and :attr:`warnings` says so).
        """
        ids = self.df["ID"].to_numpy()
        if len(ids) == 0:
            return np.zeros(0, dtype=np.int64)
        starts = np.r_[True, ids[1:] != ids[:-1]]
        return np.cumsum(starts).astype(np.int64) - 1

    @property
    def n_subjects(self) -> int:
        """Number of subjects (ID blocks)."""
        idx = self.subject_index
        return int(idx[-1]) + 1 if len(idx) else 0

    @property
    def observations(self) -> pd.DataFrame:
        """Observation records used in a fit (``EVID == 0`` and ``MDV == 0``)."""
        d = self.df
        return d[(d["EVID"] == 0) & (d["MDV"] == 0)]

    @property
    def doses(self) -> pd.DataFrame:
        """Dose records (``EVID`` 1 or 4)."""
        d = self.df
        return d[d["EVID"].isin((1, 4))]

    def __repr__(self) -> str:
        return (f"Dataset(source={self.source!r}, rows={len(self.df)}, "
                f"subjects={self.n_subjects}, covariates={self.covariates!r}, "
                f"has_dvid={self.has_dvid}, warnings={len(self.warnings)})")

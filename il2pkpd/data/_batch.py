"""Padded per-subject record arrays (fixed shapes, masks) ready for JAX."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import numpy as np

from il2pkpd.data._dataset import Dataset
from il2pkpd.errors import OptionError

__all__ = ["SubjectArrays", "to_subject_arrays"]


@dataclass(frozen=True)
class SubjectArrays:
    """Per-subject records padded to a common length; a JAX pytree.

    Shapes: ``S`` subjects, ``R`` records per subject (the longest subject, or ``pad_to``),
    ``C`` covariates. Real records come first in each row, in file order; ``mask`` is true on
    them. Padding holds finite neutral values that no consumer should read without the mask:
    TIME repeats the subject's last time, EVID is 2 (other event), MDV 1, AMT/RATE/II/ADDL/SS
    0, DV and LLOQ 0, BLQ false, CMT and DVID 1, ``row`` and ``line`` -1, covariates repeat
    the subject's last record.

    Attributes
    ----------
    ids : int64 (S,)
        Subject IDs (may repeat when an ID reappears; see ``Dataset.subject_index``).
    n_records : int64 (S,)
        Real records per subject.
    mask : bool (S, R)
    time, amt, rate, ii, dv, lloq : float64 (S, R)
        Time unit, amount, amount/time, time unit, concentration, concentration.
    addl, ss, evid, cmt, mdv, dvid : int64 (S, R)
    blq : bool (S, R)
    row : int64 (S, R)
        Index into ``Dataset.df`` (-1 on padding).
    line : int64 (S, R)
        File line (-1 on padding).
    cov : float64 (S, R, C)
        Covariates (carried forward, as in the dataset).
    cov_names : tuple of str
        Static metadata (not a leaf).
    """

    ids: np.ndarray
    n_records: np.ndarray
    mask: np.ndarray
    time: np.ndarray
    amt: np.ndarray
    rate: np.ndarray
    ii: np.ndarray
    addl: np.ndarray
    ss: np.ndarray
    evid: np.ndarray
    cmt: np.ndarray
    mdv: np.ndarray
    dv: np.ndarray
    dvid: np.ndarray
    blq: np.ndarray
    lloq: np.ndarray
    row: np.ndarray
    line: np.ndarray
    cov: np.ndarray
    cov_names: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_subjects, n_records_max)``."""
        return tuple(self.mask.shape)  # type: ignore[return-value]


_DATA_FIELDS = [f.name for f in dataclasses.fields(SubjectArrays) if f.name != "cov_names"]
jax.tree_util.register_dataclass(SubjectArrays, data_fields=_DATA_FIELDS,
                                 meta_fields=["cov_names"])

# column -> (field, dtype, pad value); None pad = repeat the subject's last value.
_COLUMNS: tuple[tuple[str, str, type, object], ...] = (
    ("TIME", "time", np.float64, None),
    ("AMT", "amt", np.float64, 0.0),
    ("RATE", "rate", np.float64, 0.0),
    ("II", "ii", np.float64, 0.0),
    ("ADDL", "addl", np.int64, 0),
    ("SS", "ss", np.int64, 0),
    ("EVID", "evid", np.int64, 2),
    ("CMT", "cmt", np.int64, 1),
    ("MDV", "mdv", np.int64, 1),
    ("DV", "dv", np.float64, 0.0),
    ("DVID", "dvid", np.int64, 1),
    ("BLQ", "blq", np.bool_, False),
    ("LLOQ", "lloq", np.float64, 0.0),
    ("LINE", "line", np.int64, -1),
)


def to_subject_arrays(dataset: Dataset, *, pad_to: int | None = None) -> SubjectArrays:
    """Pad a dataset into per-subject record arrays.

    Parameters
    ----------
    dataset : Dataset
        A dataset from :func:`il2pkpd.data.read_dataset`.
    pad_to : int, optional
        Records per subject (``R``); at least the longest subject. Fixing it keeps shapes (and
        so compiled JAX functions) the same across datasets. Default: the longest subject.

    Returns
    -------
    SubjectArrays
        numpy arrays (jax converts them on entry to a jitted function).

    Raises
    ------
    OptionError
        When ``pad_to`` is smaller than the longest subject.

    Examples
    --------
    >>> import pandas as pd
    >>> from il2pkpd.data import read_dataset
    >>> ds = read_dataset(pd.DataFrame({"ID": [1, 1, 2], "TIME": [0.0, 1.0, 0.0],
    ...                                 "AMT": [5.0, 0.0, 5.0], "DV": [None, 2.0, None]}))
    >>> arr = to_subject_arrays(ds, pad_to=4)
    >>> arr.shape, arr.n_records.tolist()
    ((2, 4), [2, 1])
    """
    df = dataset.df
    subj = dataset.subject_index
    n_sub = dataset.n_subjects
    counts = np.bincount(subj, minlength=n_sub).astype(np.int64)
    longest = int(counts.max()) if n_sub else 0
    if pad_to is None:
        width = longest
    else:
        if int(pad_to) < longest:
            raise OptionError(f"pad_to={pad_to} is smaller than the longest subject "
                              f"({longest} records); use pad_to >= {longest}")
        width = int(pad_to)
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64) if n_sub else np.zeros(0, int)
    pos = np.arange(len(df), dtype=np.int64) - starts[subj] if len(df) else subj
    mask = np.zeros((n_sub, width), dtype=bool)
    mask[subj, pos] = True
    # For each padded slot, the index of the subject's last real row (for "repeat" padding).
    last_row = starts + counts - 1
    fill_src = np.broadcast_to(last_row[:, None], (n_sub, width))

    out: dict[str, np.ndarray] = {}
    for col, name, dtype, pad in _COLUMNS:
        values = df[col].to_numpy(dtype=dtype)
        if pad is None:
            arr = values[fill_src].copy() if len(values) else np.zeros((n_sub, width), dtype)
        else:
            arr = np.full((n_sub, width), pad, dtype=dtype)
        arr[subj, pos] = values
        out[name] = arr
    row = np.full((n_sub, width), -1, dtype=np.int64)
    row[subj, pos] = np.arange(len(df), dtype=np.int64)
    covs = list(dataset.covariates)
    if covs and len(df):
        cv = df[covs].to_numpy(dtype=np.float64)
        cov = cv[fill_src].copy()
        cov[subj, pos] = cv
    else:
        cov = np.zeros((n_sub, width, len(covs)), dtype=np.float64)
    ids = df["ID"].to_numpy(dtype=np.int64)[starts] if n_sub else np.zeros(0, np.int64)
    return SubjectArrays(ids=ids, n_records=counts, mask=mask, row=row, cov=cov,
                         cov_names=tuple(covs), **out)

"""Column names, allowed values and defaults of NONMEM-style datasets (one table, one place)."""

from __future__ import annotations

from enum import IntEnum

#: Canonical columns of :attr:`il2pkpd.data.Dataset.df`, in order, with their dtypes.
CANONICAL_DTYPES: dict[str, str] = {
    "ID": "int64",
    "TIME": "float64",
    "AMT": "float64",
    "RATE": "float64",
    "II": "float64",
    "ADDL": "int64",
    "SS": "int64",
    "EVID": "int64",
    "CMT": "int64",
    "MDV": "int64",
    "DV": "float64",
    "DVID": "int64",
    "BLQ": "bool",
    "LLOQ": "float64",
    "LINE": "int64",
}
CANONICAL: tuple[str, ...] = tuple(CANONICAL_DTYPES)

#: Columns the reader understands (case-insensitive in files); everything else numeric is a
#: covariate. ``BLOQ`` is an alias of the ``BLQ`` flag; ``CENS``/``LIMIT`` is the
#: Monolix/nlmixr2 censoring convention.
KNOWN: tuple[str, ...] = (
    "ID", "TIME", "AMT", "RATE", "II", "ADDL", "SS", "EVID", "CMT", "MDV", "DV", "DVID",
    "BLQ", "BLOQ", "LLOQ", "CENS", "LIMIT", "LINE",
)

#: Columns whose values must be whole numbers.
INTEGER_COLUMNS: tuple[str, ...] = ("ID", "ADDL", "SS", "EVID", "CMT", "MDV", "DVID")



class EventKind(IntEnum):
    """Kinds of record; the values are the NONMEM EVID codes (the one mapping)."""

    OBSERVATION = 0
    DOSE = 1
    OTHER = 2
    RESET = 3
    RESET_DOSE = 4


EVID_ALLOWED: frozenset[int] = frozenset(int(k) for k in EventKind)
DOSE_EVIDS: frozenset[int] = frozenset({EventKind.DOSE, EventKind.RESET_DOSE})
RESET_EVIDS: frozenset[int] = frozenset({EventKind.RESET, EventKind.RESET_DOSE})
SS_ALLOWED: frozenset[int] = frozenset({0, 1, 2})
RATE_CODES: frozenset[float] = frozenset({-2.0, -1.0, 0.0})

#: Text that means "missing" in a data file.
MISSING_TEXT: frozenset[str] = frozenset({"", ".", "NA", "NaN", "nan", "NAN"})

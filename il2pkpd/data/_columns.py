"""Column names, allowed values and defaults of NONMEM-style datasets (one table, one place)."""

from __future__ import annotations

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

#: NONMEM event identifiers: 0 observation, 1 dose, 2 other, 3 reset, 4 reset and dose.
EVID_OBSERVATION, EVID_DOSE, EVID_OTHER, EVID_RESET, EVID_RESET_DOSE = 0, 1, 2, 3, 4
EVID_ALLOWED: frozenset[int] = frozenset({0, 1, 2, 3, 4})
DOSE_EVIDS: frozenset[int] = frozenset({EVID_DOSE, EVID_RESET_DOSE})
RESET_EVIDS: frozenset[int] = frozenset({EVID_RESET, EVID_RESET_DOSE})
SS_ALLOWED: frozenset[int] = frozenset({0, 1, 2})
RATE_CODES: frozenset[float] = frozenset({-2.0, -1.0, 0.0})

#: Text that means "missing" in a data file.
MISSING_TEXT: frozenset[str] = frozenset({"", ".", "NA", "NaN", "nan", "NAN"})

"""Reading, validating and batching NONMEM-style datasets.

>>> from il2pkpd.data import read_dataset, to_subject_arrays   # doctest: +SKIP
>>> ds = read_dataset("data.csv")                              # doctest: +SKIP
>>> arrays = to_subject_arrays(ds)                             # doctest: +SKIP
"""

from il2pkpd.data._batch import SubjectArrays, to_subject_arrays
from il2pkpd.data._columns import EventKind
from il2pkpd.data._dataset import Dataset
from il2pkpd.data._read import read_dataset, validate
from il2pkpd.data._validate import RULES
from il2pkpd.data._violations import format_lines
from il2pkpd.units import DataUnits

__all__ = [
    "DataUnits",
    "Dataset",
    "EventKind",
    "RULES",
    "SubjectArrays",
    "format_lines",
    "read_dataset",
    "to_subject_arrays",
    "validate",
]

"""Units of doses, concentrations and time: declared, converted at the boundary, never guessed.

Built on `pint <https://pint.readthedocs.io>`_: it is well kept (regular releases, wide use in
science), parses SI prefixes (``MIU``, ``µg``, ``pM``, ``mL``) and checks dimensions, so a
mismatch such as IU/mL to hours is refused instead of multiplied by a wrong factor. This module
adds what pint cannot know:

- ``IU`` (international unit of biological activity) as its own dimension, with every prefix
  (``MIU`` = 10^6 IU, ``kIU``, ``mIU``);
- mass <-> activity through a :class:`SpecificActivity` (aldesleukin label: 18 MIU per 1.1 mg),
  molar <-> mass through a :class:`MolecularWeight` (aldesleukin: 15.3 kDa). Both must be
  passed explicitly; their defaults are the label values, but a conversion never uses them
  silently;
- doses per body weight (``/kg``) or per body surface area (``/m2``), resolved from WT (kg),
  BSA (m2) or BSA computed from WT and HT (cm) with a selectable formula (:func:`bsa`);
- :class:`DataUnits`, the units a dataset declares (see :func:`il2pkpd.data.read_dataset`).

Unit text follows pint with two conveniences: a digit after a unit is a power (``m2`` =
``m**2``) and ``u`` or ``µ`` is micro (``ug``, ``µg``, ``uL``).

Examples
--------
>>> convert(1.5, "MIU", "IU")
1500000.0
>>> round(convert(1.1, "mg", "MIU", specific_activity=SpecificActivity()), 6)
18.0
>>> round(dose_amount(1.0, "MIU/m2", to="IU", bsa_m2=1.8))
1800000
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pint

from il2pkpd.errors import UnitError

__all__ = [
    "BSA_FORMULAS",
    "DataUnits",
    "MolecularWeight",
    "SpecificActivity",
    "bsa",
    "convert",
    "conversion_factor",
    "dose_amount",
    "parse_unit",
    "split_per_size",
]

BsaFormula = Literal["mosteller", "dubois", "haycock", "gehan_george"]

#: Body surface area formulas, BSA in m2 from weight in kg and height in cm:
#: ``a * WT**b * HT**c`` (Mosteller is ``sqrt(WT * HT / 3600)``).
BSA_FORMULAS: dict[str, tuple[float, float, float]] = {
    "mosteller": (1.0 / 60.0, 0.5, 0.5),        # Mosteller, NEJM 1987;317:1098
    "dubois": (0.007184, 0.425, 0.725),         # Du Bois & Du Bois, Arch Intern Med 1916
    "haycock": (0.024265, 0.5378, 0.3964),      # Haycock et al., J Pediatr 1978;93:62
    "gehan_george": (0.0235, 0.51456, 0.42246),  # Gehan & George, Cancer Chemother Rep 1970
}


@functools.cache
def _registry() -> pint.UnitRegistry:
    ureg = pint.UnitRegistry()
    ureg.define("IU = [biological_activity] = international_unit")
    ureg.define("cell = [cell_count] = cells")
    return ureg


_POWER = re.compile(r"(?<=[A-Za-zµμ])(\d+)")


def _normalise(text: str) -> str:
    text = text.strip().replace("μ", "µ").replace("^", "**")
    # "m2" -> "m**2" (a digit right after a letter is a power), but leave "**2" alone.
    return _POWER.sub(lambda m: "**" + m.group(1), text)


def parse_unit(text: str) -> pint.Unit:
    """Parse a unit text such as ``"MIU/m2"``, ``"pg/mL"``, ``"ug"`` or ``"day"``.

    Parameters
    ----------
    text : str
        The unit as written by the user.

    Returns
    -------
    pint.Unit

    Raises
    ------
    UnitError
        When the text is not a known unit.
    """
    if not isinstance(text, str) or not text.strip():
        raise UnitError(f"unit {text!r} is empty or not text; write a unit such as 'mg', "
                        "'MIU', 'IU/mL', 'pg/mL', 'pM', 'h' or 'day'")
    try:
        return _registry().Unit(_normalise(text))
    except (pint.UndefinedUnitError, pint.DefinitionSyntaxError, ValueError, TypeError,
            AttributeError) as err:
        raise UnitError(f"unknown unit {text!r} ({err}); write a unit such as 'mg', 'MIU', "
                        "'IU/mL', 'pg/mL', 'pM', 'h', 'min' or 'day'") from None


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SA_TEXT = re.compile(rf"^(?P<a>{_NUMBER})\s*(?P<au>[^\s/]+)\s*(?:per\s+|/\s*)"
                      rf"(?P<m>{_NUMBER})?\s*(?P<mu>\S+)$")


@dataclass(frozen=True)
class SpecificActivity:
    """Biological activity per mass of a product, used to convert mg <-> IU.

    The defaults are the aldesleukin (Proleukin) US label: 18 MIU per 1.1 mg (about
    16.4 MIU/mg). Potency differs between products and assays; pass your product's value.

    Parameters
    ----------
    activity : float
        Amount of activity, in ``activity_unit`` (default 18).
    activity_unit : str
        Default ``"MIU"``.
    mass : float
        The mass holding that activity, in ``mass_unit`` (default 1.1).
    mass_unit : str
        Default ``"mg"``.

    Examples
    --------
    >>> round(SpecificActivity().iu_per_mg / 1e6, 3)
    16.364
    """

    activity: float = 18.0
    activity_unit: str = "MIU"
    mass: float = 1.1
    mass_unit: str = "mg"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.activity) and self.activity > 0 and np.isfinite(self.mass)
                and self.mass > 0):
            raise UnitError(f"specific activity {self.activity} {self.activity_unit} per "
                            f"{self.mass} {self.mass_unit} must be positive and finite")
        self.quantity  # noqa: B018  (checks the units now)

    @classmethod
    def parse(cls, text: str) -> SpecificActivity:
        """Read ``"label"``, ``"18 MIU per 1.1 mg"`` or ``"16.4 MIU/mg"``.

        Examples
        --------
        >>> SpecificActivity.parse("18 MIU per 1.1 mg") == SpecificActivity()
        True
        >>> round(SpecificActivity.parse("3 MIU/mg").iu_per_mg)
        3000000
        """
        t = text.strip()
        if t.lower() in {"label", "aldesleukin", "proleukin"}:
            return cls()
        m = _SA_TEXT.match(t)
        if not m:
            raise UnitError(f"specific activity {text!r} is not understood; write for example "
                            "'18 MIU per 1.1 mg', '16.4 MIU/mg' or 'label' (18 MIU per 1.1 mg)")
        return cls(activity=float(m["a"]), activity_unit=m["au"],
                   mass=float(m["m"]) if m["m"] else 1.0, mass_unit=m["mu"])

    @property
    def quantity(self) -> pint.Quantity:
        """Activity per mass as a pint quantity (IU/mg)."""
        ureg = _registry()
        q = ureg.Quantity(self.activity, parse_unit(self.activity_unit)) / ureg.Quantity(
            self.mass, parse_unit(self.mass_unit))
        if q.dimensionality != ureg.Quantity(1, "IU/mg").dimensionality:
            raise UnitError(f"specific activity needs an activity unit (IU, MIU) per a mass "
                            f"unit (mg, µg); got {self.activity_unit} per {self.mass_unit}")
        return q.to("IU/mg")

    @property
    def iu_per_mg(self) -> float:
        """The value in IU per mg."""
        return float(self.quantity.magnitude)


@dataclass(frozen=True)
class MolecularWeight:
    """Molar mass, used to convert molar concentrations (pM) <-> mass (pg/mL).

    Parameters
    ----------
    kda : float
        Molecular weight in kDa (= kg/mol); default 15.3 (aldesleukin, US label).
    """

    kda: float = 15.3

    def __post_init__(self) -> None:
        if not (np.isfinite(self.kda) and self.kda > 0):
            raise UnitError(f"molecular weight {self.kda} kDa must be positive and finite")

    @property
    def quantity(self) -> pint.Quantity:
        """Mass per amount of substance as a pint quantity (g/mol)."""
        return _registry().Quantity(self.kda * 1e3, "g/mol")


def conversion_factor(
    from_unit: str,
    to_unit: str,
    *,
    specific_activity: SpecificActivity | None = None,
    molecular_weight: MolecularWeight | None = None,
) -> float:
    """The factor ``f`` with ``value_in_to = f * value_in_from``.

    Parameters
    ----------
    from_unit, to_unit : str
        Unit texts (see :func:`parse_unit`).
    specific_activity : SpecificActivity, optional
        Needed to cross between mass and activity (mg <-> IU, pg/mL <-> IU/mL).
    molecular_weight : MolecularWeight, optional
        Needed to cross between amount of substance and mass (pM <-> pg/mL).

    Raises
    ------
    UnitError
        Unknown units, incompatible dimensions, or a needed constant not passed. The message
        names both units.
    """
    ureg = _registry()
    src, dst = parse_unit(from_unit), parse_unit(to_unit)
    q = ureg.Quantity(1.0, src)
    target = ureg.Quantity(1.0, dst).dimensionality
    if q.dimensionality == target:
        return float(q.to(dst).magnitude)
    sa = ureg.Quantity(1.0, "IU/mg")
    mw = ureg.Quantity(1.0, "g/mol")
    # Candidate bridges: (needs SA power, needs MW power). Powers -1..1 cover every useful case
    # (mass <-> activity, molar <-> mass, molar <-> activity).
    for p_sa in (0, 1, -1):
        for p_mw in (0, 1, -1):
            if p_sa == 0 and p_mw == 0:
                continue
            if (q * sa**p_sa * mw**p_mw).dimensionality != target:
                continue
            missing = []
            if p_sa and specific_activity is None:
                missing.append("a specific activity (Python: specific_activity="
                               "SpecificActivity(), the aldesleukin label value 18 MIU per "
                               "1.1 mg, or your product's; CLI: --specific-activity)")
            if p_mw and molecular_weight is None:
                missing.append("a molecular weight (Python: molecular_weight="
                               "MolecularWeight(kda=15.3) for aldesleukin; CLI: "
                               "--molecular-weight)")
            if missing:
                raise UnitError(
                    f"converting {from_unit} to {to_unit} needs "
                    f"{' and '.join(missing)}; the conversion depends on the product, so it is "
                    "never done with a silent default")
            bridged = q
            if p_sa:
                bridged = bridged * specific_activity.quantity**p_sa
            if p_mw:
                bridged = bridged * molecular_weight.quantity**p_mw
            return float(bridged.to(dst).magnitude)
    raise UnitError(
        f"cannot convert {from_unit} to {to_unit}: {from_unit} is "
        f"{q.dimensionality} and {to_unit} is {target}; declare a unit of the same kind")


def convert(value, from_unit: str, to_unit: str, *,
            specific_activity: SpecificActivity | None = None,
            molecular_weight: MolecularWeight | None = None):
    """Convert a value (float or array) from one unit to another.

    Parameters
    ----------
    value : float or array_like
        Magnitude in ``from_unit``.
    from_unit, to_unit : str
        Unit texts, e.g. ``"MIU"``, ``"ug"``, ``"pg/mL"``, ``"pM"``, ``"day"``.
    specific_activity : SpecificActivity, optional
        Required to cross between mass and activity (never assumed).
    molecular_weight : MolecularWeight, optional
        Required to cross between molar and mass units (never assumed).

    Returns
    -------
    float or numpy.ndarray
        Magnitude in ``to_unit``.

    Raises
    ------
    UnitError
        Incompatible units (the message names both) or a missing conversion constant.

    Examples
    --------
    >>> convert(90.0, "min", "h")
    1.5
    >>> round(convert(1.0, "IU/mL", "pg/mL", specific_activity=SpecificActivity()), 2)
    61.11
    """
    f = conversion_factor(from_unit, to_unit, specific_activity=specific_activity,
                          molecular_weight=molecular_weight)
    if np.ndim(value) == 0:
        return float(value) * f
    return np.asarray(value, dtype=np.float64) * f


def bsa(wt_kg, ht_cm, formula: BsaFormula = "mosteller"):
    """Body surface area (m2) from body weight and height.

    Parameters
    ----------
    wt_kg : float or array_like
        Body weight, kg.
    ht_cm : float or array_like
        Height, cm.
    formula : {"mosteller", "dubois", "haycock", "gehan_george"}
        Default Mosteller: ``sqrt(WT * HT / 3600)``.

    Returns
    -------
    float or numpy.ndarray
        BSA, m2.

    Examples
    --------
    >>> round(bsa(70.0, 170.0), 4)
    1.8181
    """
    key = str(formula).lower().replace("-", "_").replace(" ", "_")
    if key not in BSA_FORMULAS:
        raise UnitError(f"unknown BSA formula {formula!r}; choose one of "
                        f"{', '.join(BSA_FORMULAS)}")
    a, b, c = BSA_FORMULAS[key]
    wt = np.asarray(wt_kg, dtype=np.float64)
    ht = np.asarray(ht_cm, dtype=np.float64)
    if np.any(wt <= 0) or np.any(ht <= 0):
        raise UnitError("BSA needs positive weight (kg) and height (cm); got WT "
                        f"{wt_kg} and HT {ht_cm}")
    out = a * wt**b * ht**c
    return float(out) if out.ndim == 0 else out


_PER_KG = {"kg"}
_PER_M2 = {"m2", "m**2", "m^2"}


def split_per_size(unit: str) -> tuple[str, Literal["kg", "m2"] | None]:
    """Split ``"MIU/m2"`` into ``("MIU", "m2")``; ``"mg"`` gives ``("mg", None)``.

    A dose unit ending in ``/kg`` is per body weight, ``/m2`` per body surface area. (pint
    alone would cancel ``mg/kg`` into a pure number, so the split is done on the text.)
    """
    text = unit.strip()
    if "/" in text:
        head, tail = text.rsplit("/", 1)
        tail_n = tail.strip().replace(" ", "")
        if tail_n in _PER_KG:
            return head.strip(), "kg"
        if tail_n in _PER_M2:
            return head.strip(), "m2"
    return text, None


def dose_amount(
    value,
    unit: str,
    *,
    to: str = "IU",
    wt_kg=None,
    bsa_m2=None,
    ht_cm=None,
    bsa_formula: BsaFormula = "mosteller",
    specific_activity: SpecificActivity | None = None,
):
    """An absolute dose amount from a dose written as IU, MIU, mg, µg, or per kg / per m2.

    Parameters
    ----------
    value : float or array_like
        The dose as written, in ``unit``.
    unit : str
        ``"MIU"``, ``"IU/kg"``, ``"MIU/m2"``, ``"ug/kg"``, ``"mg"``, ...
    to : str
        The amount unit wanted (default ``"IU"``).
    wt_kg : float or array_like, optional
        Body weight, kg; needed for ``/kg`` doses, and for ``/m2`` doses without ``bsa_m2``.
    bsa_m2 : float or array_like, optional
        Body surface area, m2, for ``/m2`` doses.
    ht_cm : float or array_like, optional
        Height, cm; with ``wt_kg`` gives the BSA when ``bsa_m2`` is not given.
    bsa_formula : str
        See :func:`bsa` (default Mosteller).
    specific_activity : SpecificActivity, optional
        Needed when ``unit`` is a mass and ``to`` an activity (or the reverse).

    Returns
    -------
    float or numpy.ndarray
        The amount in ``to``.

    Raises
    ------
    UnitError
        A per-size dose without the body size it needs, or incompatible units.

    Examples
    --------
    >>> dose_amount(600_000, "IU/kg", to="MIU", wt_kg=70.0)
    42.0
    """
    base, per = split_per_size(unit)
    amount = convert(value, base, to, specific_activity=specific_activity)
    if per is None:
        return amount
    return amount * body_size(per, unit=unit, to=to, wt_kg=wt_kg, bsa_m2=bsa_m2, ht_cm=ht_cm,
                              bsa_formula=bsa_formula)


def body_size(per: Literal["kg", "m2"], *, unit: str, to: str, wt_kg=None, bsa_m2=None,
              ht_cm=None, bsa_formula: BsaFormula = "mosteller"):
    """Body weight (kg) or BSA (m2) that multiplies a per-size dose; errors name both units."""
    if per == "kg":
        if wt_kg is None:
            raise UnitError(f"a dose in {unit} cannot be converted to {to} without body weight: "
                            "give WT (kg)")
        size = np.asarray(wt_kg, dtype=np.float64)
    elif bsa_m2 is not None:
        size = np.asarray(bsa_m2, dtype=np.float64)
    elif wt_kg is not None and ht_cm is not None:
        try:
            size = np.asarray(bsa(wt_kg, ht_cm, bsa_formula), dtype=np.float64)
        except UnitError as err:
            raise UnitError(f"a dose in {unit} cannot be converted to {to}: {err}") from None
    else:
        raise UnitError(f"a dose in {unit} cannot be converted to {to} without body surface "
                        "area: give BSA (m2), or WT (kg) and HT (cm) to compute it")
    if np.any(~np.isfinite(size)) or np.any(size <= 0):
        what = "weight (WT, kg)" if per == "kg" else "surface area (BSA, m2)"
        bad = size[~(np.isfinite(size) & (size > 0))] if size.ndim else size
        raise UnitError(f"a dose in {unit} cannot be converted to {to} without a positive, "
                        f"finite body {what}; got {np.unique(bad)[:5].tolist()}")
    return float(size) if size.ndim == 0 else size


@dataclass(frozen=True)
class DataUnits:
    """Units a dataset is written in (or a model expects); ``None`` means not declared.

    Parameters
    ----------
    time : str, optional
        Unit of TIME and II (``"h"``, ``"min"``, ``"day"``).
    amount : str, optional
        Unit of AMT (RATE is amount per time): ``"IU"``, ``"MIU"``, ``"mg"``, ``"ug"``, or per
        size ``"IU/kg"``, ``"MIU/m2"`` (resolved from the WT, BSA or WT and HT covariates).
    concentration : str or mapping of int to str, optional
        Unit of DV and LLOQ, one for all DVIDs or one per DVID (``{1: "pg/mL", 2: "cells/uL"}``).
    specific_activity : SpecificActivity, optional
        Allows mg <-> IU conversion (never assumed).
    molecular_weight : MolecularWeight, optional
        Allows pM <-> pg/mL conversion (never assumed).
    bsa_formula : str
        Formula for BSA computed from WT and HT when a dose is per m2 (default Mosteller).

    Examples
    --------
    >>> DataUnits(time="day", amount="MIU", concentration="pg/mL").time
    'day'
    """

    time: str | None = None
    amount: str | None = None
    concentration: str | Mapping[int, str] | None = None
    specific_activity: SpecificActivity | None = None
    molecular_weight: MolecularWeight | None = None
    bsa_formula: BsaFormula = "mosteller"

    def __post_init__(self) -> None:
        if self.time is not None:
            parse_unit(self.time)
        if self.amount is not None:
            parse_unit(split_per_size(self.amount)[0])
        for unit in self.concentration_map().values():
            parse_unit(unit)
        bsa(70.0, 170.0, self.bsa_formula)  # checks the formula name

    def concentration_map(self) -> dict[int | None, str]:
        """Concentration units keyed by DVID (``None`` key: every DVID)."""
        c = self.concentration
        if c is None:
            return {}
        if isinstance(c, str):
            return {None: c}
        return {int(k): str(v) for k, v in dict(c).items()}

    def concentration_for(self, dvid: int) -> str | None:
        """The concentration unit declared for a DVID, or ``None``."""
        m = self.concentration_map()
        return m.get(int(dvid), m.get(None))

    @property
    def declared(self) -> bool:
        """Whether any unit is declared."""
        return any(v is not None for v in (self.time, self.amount, self.concentration))

"""Reading and validating model files (TOML, plus a Python file for user ODE models)."""

from __future__ import annotations

import importlib.util
import keyword
import re
import sys
import tomllib
from pathlib import Path
from types import MappingProxyType
from typing import Any

from il2pkpd._paths import MODELS_DIR
from il2pkpd.errors import ModelFileError
from il2pkpd.models._model import (
    BUILTIN_STATES,
    DOMAINS,
    STRUCTURES,
    Model,
    OutputSpec,
    ParameterSpec,
    UserODE,
)

__all__ = ["load_model", "list_models"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_AUTO = re.compile(r"^(TLAG|F|R|D)([0-9]+)$")
_KNOWN_TOP = {"model", "parameters", "compartments", "outputs", "states", "population",
              "residual", "covariates"}
_KNOWN_MODEL = {"name", "description", "structure", "depot", "time_unit", "amount_unit",
                "dosing"}
_KNOWN_PARAM = {"unit", "default", "domain", "description", "prior"}
_KNOWN_OUTPUT = {"name", "unit", "cmt", "description"}
_AUTO_SPECS = {
    "TLAG": (0.0, "nonnegative", "lag time of doses into compartment {n}", "time"),
    "F": (1.0, "nonnegative", "bioavailability of doses into compartment {n}", ""),
    "R": (None, "positive", "infusion rate of RATE=-1 doses into compartment {n}", "rate"),
    "D": (None, "positive", "infusion duration of RATE=-2 doses into compartment {n}", "time"),
}


def list_models() -> list[str]:
    """Names of the model files bundled in ``models/``."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.toml"))


def _resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists() or len(p.parts) > 1:
        if p.is_file():
            return p
        raise ModelFileError(
            f"model file {p} does not exist. Give a path to a .toml model file or one of the "
            f"bundled names: {', '.join(list_models())}."
        )
    candidate = MODELS_DIR / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    raise ModelFileError(
        f"unknown model {str(name_or_path)!r}: no file {candidate}. Bundled models: "
        f"{', '.join(list_models()) or '(none)'}; or give a path to a .toml file."
    )


def load_model(name_or_path: str | Path) -> Model:
    """Read and validate a model file.

    Parameters
    ----------
    name_or_path : str or path
        A bundled model name (``"two_cmt_iv"``) or a path to a TOML model file.

    Returns
    -------
    Model
        The validated model; lag and bioavailability parameters ``TLAG<n>`` (default 0) and
        ``F<n>`` (default 1) exist for every dosing compartment, and ``R<n>``/``D<n>`` (no
        default) for doses with ``RATE`` -1/-2.

    Raises
    ------
    ModelFileError
        Listing every problem found, each with the file name and the key.

    Examples
    --------
    >>> m = load_model("two_cmt_iv")
    >>> m.required_parameters
    ('CL', 'V1', 'Q', 'V2')
    >>> m.parameter("TLAG1").default, m.parameter("F1").default
    (0.0, 1.0)
    """
    path = _resolve(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ModelFileError(f"{path}: not valid TOML: {err}. Fix the syntax of the file.") \
            from None
    return _build(raw, path)


def _build(raw: dict[str, Any], path: Path) -> Model:
    problems: list[str] = []

    def bad(key: str, msg: str) -> None:
        problems.append(f"  [{key}] {msg}")

    for key in raw:
        if key not in _KNOWN_TOP:
            bad(key, f"unknown table; allowed: {', '.join(sorted(_KNOWN_TOP))}")

    # [model] -------------------------------------------------------------------------------
    mtab = raw.get("model")
    if not isinstance(mtab, dict):
        bad("model", "missing table [model] (keys name, structure, ...)")
        mtab = {}
    for key in mtab:
        if key not in _KNOWN_MODEL:
            bad(f"model.{key}", f"unknown key; allowed: {', '.join(sorted(_KNOWN_MODEL))}")
    name = mtab.get("name", path.stem)
    if not isinstance(name, str) or not name:
        bad("model.name", "must be a non-empty string")
        name = path.stem
    description = str(mtab.get("description", ""))
    structure_raw = mtab.get("structure")
    ode_file: Path | None = None
    structure = ""
    if not isinstance(structure_raw, str):
        bad("model.structure", "missing; use one_cmt, two_cmt, three_cmt or \"ode:<file>.py\"")
    elif structure_raw in STRUCTURES:
        structure = structure_raw
    elif structure_raw.startswith("ode:"):
        structure = "ode"
        ode_file = path.parent / structure_raw[4:].strip()
        if ode_file.suffix != ".py" or not ode_file.is_file():
            bad("model.structure", f"ODE file {ode_file} does not exist (a .py file beside the "
                "TOML file is expected)")
            ode_file = None
    else:
        bad("model.structure", f"{structure_raw!r} is not allowed; use one_cmt, two_cmt, "
            "three_cmt or \"ode:<file>.py\"")
    depot = mtab.get("depot", False)
    if not isinstance(depot, bool):
        bad("model.depot", "must be true or false")
        depot = False
    if structure == "ode":
        depot = False  # informational only: an ODE model writes its depot itself
    time_unit = str(mtab.get("time_unit", "h"))
    amount_unit = str(mtab.get("amount_unit", "mg"))

    # [compartments] / [states] ---------------------------------------------------------------
    ctab = raw.get("compartments", {})
    compartments: dict[int, str] = {}
    if not isinstance(ctab, dict) or not ctab:
        bad("compartments", "missing table: NONMEM compartment numbers, e.g. 1 = \"central\"")
        ctab = {}
    for k, v in ctab.items():
        try:
            n = int(k)
        except ValueError:
            bad(f"compartments.{k}", "keys must be compartment numbers (1, 2, ...)")
            continue
        if n < 1:
            bad(f"compartments.{k}", "compartment numbers start at 1")
        if not isinstance(v, str) or not _NAME.match(v):
            bad(f"compartments.{k}", f"{v!r} is not a valid state name")
            continue
        if v in compartments.values():
            bad(f"compartments.{k}", f"state {v!r} appears twice")
        compartments[n] = v
    compartments = dict(sorted(compartments.items()))

    if structure == "ode":
        stab = raw.get("states", {})
        names = stab.get("names") if isinstance(stab, dict) else None
        if not isinstance(names, list) or not names or not all(
                isinstance(s, str) and _NAME.match(s) for s in names):
            bad("states.names", "an ODE model needs [states] names = [\"depot\", ...] (valid "
                "identifiers)")
            states: tuple[str, ...] = tuple(compartments.values())
        else:
            states = tuple(names)
            if len(set(states)) != len(states):
                bad("states.names", "state names must be unique")
        for n, s in compartments.items():
            if s not in states:
                bad(f"compartments.{n}", f"state {s!r} is not in [states] names")
    elif structure:
        states = (("depot",) if depot else ()) + BUILTIN_STATES[structure]
        if "states" in raw:
            bad("states", "only for ODE models; built-in structures have fixed states "
                f"{list(states)}")
        if sorted(compartments.values()) != sorted(states):
            bad("compartments", f"structure {structure}{' with depot' if depot else ''} has "
                f"states {list(states)}; map each to one compartment number (found "
                f"{list(compartments.values())})")
    else:
        states = tuple(compartments.values())

    dosing_raw = mtab.get("dosing")
    if dosing_raw is None:
        if structure in STRUCTURES:
            dosing = tuple(n for n, s in compartments.items() if s in ("depot", "central"))
        else:
            dosing = tuple(compartments)
    elif not isinstance(dosing_raw, list) or not all(isinstance(d, int) for d in dosing_raw):
        bad("model.dosing", "must be a list of compartment numbers")
        dosing = tuple(compartments)
    else:
        dosing = tuple(sorted(set(dosing_raw)))
        for d in dosing:
            if d not in compartments:
                bad("model.dosing", f"compartment {d} is not in [compartments]")
            elif structure in STRUCTURES and compartments[d] not in ("depot", "central"):
                bad("model.dosing", f"closed-form models take doses into the depot or central "
                    f"compartment only, not {compartments[d]!r} (use an ODE model)")

    # [parameters] ----------------------------------------------------------------------------
    ptab = raw.get("parameters", {})
    if not isinstance(ptab, dict) or not ptab:
        bad("parameters", "missing table: one [parameters.<NAME>] table per parameter")
        ptab = {}
    params: list[ParameterSpec] = []
    for pname, spec in ptab.items():
        key = f"parameters.{pname}"
        if not _NAME.match(pname) or keyword.iskeyword(pname):
            bad(key, "parameter names must be identifiers (letters, digits, _)")
            continue
        if not isinstance(spec, dict):
            bad(key, "must be a table with unit, default, domain, description")
            continue
        for k in spec:
            if k not in _KNOWN_PARAM:
                bad(f"{key}.{k}", f"unknown key; allowed: {', '.join(sorted(_KNOWN_PARAM))}")
        domain = spec.get("domain", "positive")
        if domain not in DOMAINS:
            bad(f"{key}.domain", f"{domain!r} not allowed; use one of {', '.join(DOMAINS)}")
            domain = "real"
        default = spec.get("default")
        if default is not None:
            if isinstance(default, bool) or not isinstance(default, int | float):
                bad(f"{key}.default", f"must be a number, got {default!r}")
                default = None
            else:
                default = float(default)
                from il2pkpd.models._model import domain_ok
                if not domain_ok(domain, default):
                    bad(f"{key}.default", f"{default} is outside domain {domain} "
                        f"({DOMAINS[domain]})")
        prior = spec.get("prior")
        if prior is not None:
            if not isinstance(prior, dict) or "dist" not in prior:
                bad(f"{key}.prior", "must be a table with at least 'dist', e.g. "
                    "{ dist = \"lognormal\", loc = 1.39, scale = 1.0 }")
                prior = None
            else:
                prior = MappingProxyType(dict(prior))
        params.append(ParameterSpec(
            name=pname, unit=str(spec.get("unit", "")), default=default, domain=domain,
            description=str(spec.get("description", "")), prior=prior, auto=False))
    declared = {p.name for p in params}
    if structure in STRUCTURES:
        needed = STRUCTURES[structure] + (("KA",) if depot else ())
        for pn in needed:
            if pn not in declared:
                bad("parameters", f"structure {structure}{' with depot' if depot else ''} needs "
                    f"parameter {pn} (it needs {', '.join(needed)})")
    for pn in declared:
        m = _AUTO.match(pn)
        if m and int(m.group(2)) not in dosing:
            bad(f"parameters.{pn}", f"compartment {m.group(2)} is not a dosing compartment "
                f"(dosing: {list(dosing)})")
    for n in dosing:
        for prefix, (dflt, dom, desc, unit) in _AUTO_SPECS.items():
            pn = f"{prefix}{n}"
            if pn in declared:
                continue
            unit_txt = {"time": time_unit, "rate": f"{amount_unit}/{time_unit}"}.get(unit, "")
            params.append(ParameterSpec(name=pn, unit=unit_txt, default=dflt, domain=dom,
                                        description=desc.format(n=n), auto=True))

    # [outputs] -------------------------------------------------------------------------------
    otab = raw.get("outputs", {})
    outputs: list[OutputSpec] = []
    if not isinstance(otab, dict) or not otab:
        bad("outputs", "missing table: at least [outputs.1] with name, unit, cmt")
        otab = {}
    for k, spec in otab.items():
        key = f"outputs.{k}"
        try:
            dvid = int(k)
        except ValueError:
            bad(key, "outputs are keyed by DVID numbers ([outputs.1], [outputs.2], ...)")
            continue
        if not isinstance(spec, dict):
            bad(key, "must be a table with name, unit, cmt")
            continue
        for kk in spec:
            if kk not in _KNOWN_OUTPUT:
                bad(f"{key}.{kk}", f"unknown key; allowed: {', '.join(sorted(_KNOWN_OUTPUT))}")
        oname = spec.get("name")
        if not isinstance(oname, str) or not _NAME.match(oname):
            bad(f"{key}.name", "missing or not an identifier")
            oname = f"OUT{dvid}"
        cmt = spec.get("cmt")
        if cmt is not None and (not isinstance(cmt, int) or cmt not in compartments):
            bad(f"{key}.cmt", f"{cmt!r} is not a compartment number in [compartments]")
            cmt = None
        outputs.append(OutputSpec(dvid=dvid, name=oname, unit=str(spec.get("unit", "")),
                                  cmt=cmt, description=str(spec.get("description", ""))))
    outputs.sort(key=lambda o: o.dvid)
    if len({o.name for o in outputs}) != len(outputs):
        bad("outputs", "output names must be unique")
    if structure in STRUCTURES and len(outputs) > 1:
        bad("outputs", "built-in structures have one output (the central concentration); "
            "write an ODE model for more")

    fit_spec = {k: raw[k] for k in ("population", "residual", "covariates") if k in raw}

    if problems:
        raise ModelFileError(f"model file {path} has {len(problems)} problem(s):\n"
                             + "\n".join(problems))

    ode = _load_ode(ode_file, states, params, outputs) if ode_file is not None else None
    return Model(
        name=name, description=description, structure=structure, depot=depot,
        time_unit=time_unit, amount_unit=amount_unit, parameters=tuple(params), states=states,
        compartments=MappingProxyType(compartments), dosing_cmts=dosing,
        outputs=tuple(outputs), ode=ode, fit_spec=MappingProxyType(fit_spec), path=path)


def _load_ode(file: Path, states: tuple[str, ...], params: list[ParameterSpec],
              outputs: list[OutputSpec]) -> UserODE:
    mod_name = f"il2pkpd_user_model_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, file)
    if spec is None or spec.loader is None:
        raise ModelFileError(f"{file}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
    except Exception as err:  # user code: report, whatever it raised
        sys.modules.pop(mod_name, None)
        raise ModelFileError(f"{file}: importing the ODE file failed: "
                             f"{type(err).__name__}: {err}") from None
    missing = [f for f in ("rhs", "outputs") if not callable(getattr(module, f, None))]
    if missing:
        raise ModelFileError(f"{file}: must define function(s) {', '.join(missing)} "
                             "(rhs(t, y, p), outputs(y, p), optional initial(p))")
    ode = UserODE(rhs=module.rhs, outputs=module.outputs,
                  initial=getattr(module, "initial", None), path=file)
    _trial_call(ode, states, params, outputs)
    return ode


def _trial_call(ode: UserODE, states: tuple[str, ...], params: list[ParameterSpec],
                outputs: list[OutputSpec]) -> None:
    """Call the user functions once with defaults so mistakes surface at load time."""
    import jax.numpy as jnp

    p = {q.name: jnp.asarray(q.default if q.default is not None else 1.0) for q in params}
    y = {s: jnp.asarray(0.0) for s in states}
    where = ode.path
    try:
        if ode.initial is not None:
            init = dict(ode.initial(p))
            extra = set(init) - set(states)
            if extra:
                raise ModelFileError(f"{where}: initial() returns unknown state(s) "
                                     f"{sorted(extra)}; states are {list(states)}")
            y.update({k: jnp.asarray(v) for k, v in init.items()})
        d = dict(ode.rhs(0.0, y, p))
        if set(d) != set(states):
            raise ModelFileError(
                f"{where}: rhs() must return one derivative per state {list(states)}; missing "
                f"{sorted(set(states) - set(d))}, unknown {sorted(set(d) - set(states))}")
        o = dict(ode.outputs(y, p))
        missing = [q.name for q in outputs if q.name not in o]
        if missing:
            raise ModelFileError(f"{where}: outputs() lacks output(s) {missing} declared in "
                                 "[outputs]")
    except ModelFileError:
        raise
    except KeyError as err:
        raise ModelFileError(f"{where}: the ODE functions use name {err} that is neither a "
                             f"state {list(states)} nor a parameter "
                             f"{[q.name for q in params]}") from None
    except Exception as err:
        raise ModelFileError(f"{where}: calling the ODE functions with default parameters "
                             f"failed: {type(err).__name__}: {err}") from None

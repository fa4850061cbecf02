"""Read a fit directory into the plain arrays the report needs.

Everything the report shows is computed from what a fit directory holds, so a report can be
rebuilt from the directory alone. The names relied upon (see also the "Fit directory layout"
section of docs/ARCHITECTURE.md):

``posterior.nc`` (required)
    An ArviZ DataTree (``arviz.from_numpyro(..., log_likelihood=True)``):

    - ``posterior``: population parameters as scalar variables (typical values named as in the
      model file, ``omega_<P>``, ``corr_<P>_<Q>``, ``sigma_<output>``); random effects
      ``eta_<P>`` with a ``subject`` dimension; per-observation deterministics ``pred`` (population
      prediction, all random effects at zero) and ``ipred`` (individual prediction), with an
      ``obs`` dimension (upper-case ``PRED``/``IPRED`` are accepted too; they may also sit in
      ``posterior_predictive`` or ``predictions``: :func:`il2pkpd.inference.fit` puts them in
      ``predictions`` when it computed them on a thinned subset of the draws, whose positions
      the ``draw`` coordinate gives). Random effects for shrinkage: ``eta_<P>``
      over ``subject``, or ``eta`` over ``(subject, iiv)`` with parameter names as ``iiv``
      coordinates, or (without correlations) ``z`` over ``(subject, iiv)`` times ``omega_<P>``.
    - ``sample_stats``: ``diverging``; optional ``energy`` (for E-BFMI), ``tree_depth`` or
      ``n_steps``, ``reached_max_tree_depth`` (NumPyro: ``extra_fields=("energy", "num_steps")``).
    - ``observed_data``: ``DV`` per observation (for BLQ records: the LLOQ).
    - ``posterior_predictive``: ``DV`` per observation (uncensored simulated values).
    - ``log_likelihood``: ``DV`` per observation (any single variable is accepted).
    - ``constant_data``: per-observation ``ID``, ``TIME``, ``DVID`` and optionally ``MDV``,
      ``BLQ``, ``LLOQ`` (any dimension name, each of the length of ``observed_data.DV``);
      optional per-subject covariates (length = number of subjects; a ``cov_`` prefix is
      dropped; ``subject_ID``, ``OUTPUT``, ``CMT``, ``ROW`` are not covariates).
    - ``prior`` (optional): prior draws, used for prior-against-posterior plots.

    Observations may also be stored padded as ``(subject, obs)`` arrays; entries with a missing
    ``TIME`` or ``MDV == 1`` are then dropped.

``summary.csv`` (optional)
    Columns ``parameter, mean, sd, q5, median, q95, ess_bulk, ess_tail, r_hat``; when absent the
    table is recomputed with ``arviz.summary``.

``fit.json`` (optional)
    Keys ``model_path`` or ``model`` (path of the model TOML, or a bundled model's name: gives
    parameter and output units and output names), ``data_path`` or ``data`` (path of the dataset
    CSV: gives doses and covariates for the data summary) and ``max_tree_depth`` (default 10),
    at the top level or under ``info``. Root attributes of the DataTree (``model_path``,
    ``il2pkpd_model``, ``data_path``, ``il2pkpd_data``) are read when ``fit.json`` has none. A
    ``data.csv`` beside ``posterior.nc`` is used when no dataset is named.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from il2pkpd._paths import MODELS_DIR
from il2pkpd.errors import InputError

__all__ = ["FitData", "load_fit_dir", "draws"]

OBS_COLUMNS = ("ID", "TIME", "DVID", "MDV", "BLQ", "LLOQ")
SAMPLE_DIMS = ("chain", "draw")


class FitDirError(InputError):
    """A fit directory that cannot be reported on."""


@dataclass(frozen=True)
class FitData:
    """What the report needs from a fit directory, as plain arrays.

    Attributes
    ----------
    fit_dir : pathlib.Path
    datatree : xarray.DataTree
        The loaded (in memory) DataTree.
    obs : pandas.DataFrame
        One row per used observation: ``ID, TIME, DVID, DV, BLQ, LLOQ`` and ``OUTPUT`` (output
        name), in the order of the flattened ``obs`` dimension (column ``POS``).
    pred, ipred, ppc : numpy.ndarray or None
        Draws of the population prediction, individual prediction and posterior predictive DV,
        shape ``(n_draws, n_obs)`` (chains stacked), columns aligned with ``obs``.
    summary : pandas.DataFrame or None
        ``summary.csv`` when present.
    model : dict or None
        The parsed model TOML when the fit directory names one.
    model_path : pathlib.Path or None
    dataset : pandas.DataFrame or None
        The dataset CSV when the fit directory names one.
    meta : dict
        The content of ``fit.json`` (empty when absent).
    pred_draws : int or None
        Number of draws behind ``pred`` (None without it).
    notes : list of str
        What was missing or could not be read (shown in the report).
    """

    fit_dir: Path
    datatree: xr.DataTree
    obs: pd.DataFrame
    pred: np.ndarray | None
    ipred: np.ndarray | None
    ppc: np.ndarray | None
    summary: pd.DataFrame | None
    model: dict | None
    model_path: Path | None
    dataset: pd.DataFrame | None
    meta: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    pred_draws: int | None = None

    def has_group(self, name: str) -> bool:
        """Whether the DataTree has the group *name* with at least one variable."""
        return name in self.datatree.children and len(self.datatree[name].data_vars) > 0

    def output_unit(self, output: str) -> str:
        """Unit of *output* from the model file ('' when unknown)."""
        for spec in ((self.model or {}).get("outputs") or {}).values():
            if isinstance(spec, dict) and spec.get("name") == output:
                return str(spec.get("unit", ""))
        return ""

    @property
    def time_unit(self) -> str:
        """Time unit from the model file ('' when unknown)."""
        return str(((self.model or {}).get("model") or {}).get("time_unit", ""))


def draws(da: xr.DataArray) -> np.ndarray:
    """Stack the sample dimensions of *da* first: shape ``(n_chain * n_draw, ...)``."""
    sample = [d for d in SAMPLE_DIMS if d in da.dims]
    rest = [d for d in da.dims if d not in sample]
    arr = da.transpose(*sample, *rest).values
    n = int(np.prod([da.sizes[d] for d in sample])) if sample else 1
    return arr.reshape((n, *arr.shape[len(sample):]))


def _pick(ds: xr.Dataset, names: tuple[str, ...]) -> xr.DataArray | None:
    for name in names:
        if name in ds.data_vars:
            return ds[name]
    return None


def _observed(dt: xr.DataTree) -> xr.DataArray:
    if "observed_data" not in dt.children:
        raise FitDirError(
            "posterior.nc has no observed_data group; the report needs the observed DV. "
            "Save the fit with arviz.from_numpyro(mcmc, log_likelihood=True)."
        )
    ds = dt["observed_data"].to_dataset()
    da = _pick(ds, ("DV",))
    if da is None:
        if len(ds.data_vars) != 1:
            raise FitDirError(
                f"observed_data holds {sorted(ds.data_vars)} but no 'DV'; name the observed "
                "site 'DV'."
            )
        da = ds[next(iter(ds.data_vars))]
    return da


def _read_model(path: Path, notes: list[str]) -> dict | None:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as err:
        notes.append(f"model file {path} could not be read ({err}); units are left blank")
        return None


def _resolve_model(ref: str, fit_dir: Path) -> Path | None:
    cand = Path(ref)
    for p in (cand, fit_dir / cand, MODELS_DIR / cand, MODELS_DIR / f"{ref}.toml"):
        if p.is_file():
            return p
    return None


def load_fit_dir(fit_dir: str | Path) -> FitData:
    """Load the fit directory *fit_dir* (see the module docstring for the names used).

    Parameters
    ----------
    fit_dir : str or pathlib.Path
        A directory holding ``posterior.nc``.

    Returns
    -------
    FitData

    Raises
    ------
    FitDirError
        When the directory or ``posterior.nc`` is missing, or the observations cannot be
        matched to their constant data.
    """
    fit_dir = Path(fit_dir)
    nc = fit_dir / "posterior.nc"
    if not nc.is_file():
        raise FitDirError(
            f"{nc} does not exist; give the directory written by `il2pkpd fit` "
            "(it holds posterior.nc)."
        )
    notes: list[str] = []
    if not (fit_dir / "_COMPLETE").exists():
        notes.append("the fit directory has no _COMPLETE marker: the fit may be unfinished")
    dt = xr.open_datatree(nc, engine="h5netcdf").load()
    dt.close()

    obs, keep = _observation_table(dt, notes)

    post = dt["posterior"].to_dataset() if "posterior" in dt.children else xr.Dataset()

    def per_obs(da: xr.DataArray | None, what: str) -> np.ndarray | None:
        if da is None:
            notes.append(f"{what} not in the fit")
            return None
        arr = draws(da)
        arr = arr.reshape(arr.shape[0], -1)
        if arr.shape[1] != keep.size:
            notes.append(f"{what}: {arr.shape[1]} values per draw, expected {keep.size}; ignored")
            return None
        return arr[:, keep]

    pred_groups = [post] + [dt[g].to_dataset() for g in ("posterior_predictive", "predictions")
                            if g in dt.children]

    def find(names):
        for ds in pred_groups:
            da = _pick(ds, names)
            if da is not None:
                return da
        return None

    pred = per_obs(find(("pred", "PRED")), "population prediction (posterior 'pred')")
    ipred = per_obs(find(("ipred", "IPRED")), "individual prediction (posterior 'ipred')")
    ppc = None
    if "posterior_predictive" in dt.children:
        ppc = per_obs(_pick(dt["posterior_predictive"].to_dataset(), ("DV",)),
                      "posterior predictive 'DV'")
    else:
        notes.append("posterior_predictive group not in the fit")

    summary = None
    if (fit_dir / "summary.csv").is_file():
        summary = pd.read_csv(fit_dir / "summary.csv")

    meta: dict = {}
    if (fit_dir / "fit.json").is_file():
        try:
            meta = json.loads((fit_dir / "fit.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            notes.append(f"fit.json could not be read ({err})")
    info = meta.get("info") if isinstance(meta.get("info"), dict) else {}

    def ref(keys, attrs):
        for key in keys:
            for src in (meta, info):
                if src.get(key):
                    return src[key]
        for key in attrs:
            if dt.attrs.get(key):
                return dt.attrs[key]
        return None

    model_ref = ref(("model_path", "model"), ("model_path", "model", "il2pkpd_model"))
    if info.get("max_tree_depth") and "max_tree_depth" not in meta:
        meta = {**meta, "max_tree_depth": info["max_tree_depth"]}
    model = model_path = None
    if model_ref:
        model_path = _resolve_model(str(model_ref), fit_dir)
        if model_path is None:
            notes.append(f"model file {model_ref!s} not found; units are left blank")
        else:
            model = _read_model(model_path, notes)
    else:
        notes.append("the fit directory does not name its model file; units are left blank")

    dataset = None
    data_ref = ref(("data_path", "data"), ("data_path", "il2pkpd_data"))
    data_path = None
    if data_ref and Path(str(data_ref)).is_file():
        data_path = Path(str(data_ref))
    elif data_ref and (fit_dir / str(data_ref)).is_file():
        data_path = fit_dir / str(data_ref)
    elif (fit_dir / "data.csv").is_file():
        data_path = fit_dir / "data.csv"
    if data_path is not None:
        try:
            dataset = pd.read_csv(data_path)
        except (OSError, ValueError) as err:
            notes.append(f"dataset {data_path} could not be read ({err})")

    outputs = {}
    for key, spec in ((model or {}).get("outputs") or {}).items():
        if isinstance(spec, dict) and "name" in spec:
            try:
                outputs[int(key)] = str(spec["name"])
            except ValueError:
                continue
    obs["OUTPUT"] = [outputs.get(int(d), f"DVID {int(d)}") for d in obs["DVID"]]
    return FitData(
        fit_dir=fit_dir, datatree=dt, obs=obs.reset_index(drop=True), pred=pred, ipred=ipred,
        ppc=ppc, summary=summary, model=model, model_path=model_path, dataset=dataset,
        meta=meta, notes=notes, pred_draws=None if pred is None else int(pred.shape[0]),
    )


def _observation_table(
    dt: xr.DataTree, notes: list[str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Long table of the used observations and the mask over the flattened obs values."""
    dv_da = _observed(dt)
    dv = np.asarray(dv_da.values, dtype=float)
    shape = dv.shape
    n = dv.size
    const = dt["constant_data"].to_dataset() if "constant_data" in dt.children else xr.Dataset()
    cols: dict[str, np.ndarray] = {}
    for name in OBS_COLUMNS:
        if name in const.data_vars and const[name].size == n:
            cols[name] = np.asarray(const[name].values).reshape(-1)
    for name in ("ID", "TIME"):
        if name not in cols:
            raise FitDirError(
                f"constant_data has no per-observation '{name}' of length {n} (the number of "
                f"observed DV values; shape {shape}); save it with "
                "arviz.from_numpyro(..., constant_data={'ID': ..., 'TIME': ..., 'DVID': ...})."
            )
    if "DVID" not in cols:
        notes.append("constant_data has no DVID: all observations are taken as output 1")
        cols["DVID"] = np.ones(n, dtype=int)
    if "BLQ" not in cols:
        notes.append("constant_data has no BLQ flag: no observation is taken as censored")
        cols["BLQ"] = np.zeros(n, dtype=bool)
    if "LLOQ" not in cols:
        cols["LLOQ"] = np.full(n, np.nan)
    time = np.asarray(cols["TIME"], dtype=float)
    keep = np.isfinite(time)
    if "MDV" in cols:
        keep &= np.asarray(cols["MDV"]) == 0
    if "obs_mask" in const.data_vars and const["obs_mask"].size == n:
        keep &= np.asarray(const["obs_mask"].values).reshape(-1).astype(bool)
    dvf = dv.reshape(-1)
    blq = np.asarray(cols["BLQ"]).astype(bool)
    keep &= np.isfinite(dvf) | blq
    table = pd.DataFrame({
        "POS": np.arange(n),
        "ID": cols["ID"],
        "TIME": time,
        "DVID": np.asarray(cols["DVID"]).astype(np.int64),
        "DV": dvf,
        "BLQ": blq,
        "LLOQ": np.asarray(cols["LLOQ"], dtype=float),
    })
    dropped = int((~keep).sum())
    if dropped:
        notes.append(f"{dropped} padded or unused observation entries (MDV=1) left out")
    return table[keep].reset_index(drop=True), keep

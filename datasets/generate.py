"""Generate the bundled SIMULATED IL-2 trial datasets from the canonical model (il2_pkpd).

No openly licensed individual IL-2 trial data exist (DOMAIN.md section 7), so the package ships
datasets simulated from ``models/il2_pkpd.toml`` with its illustrative default parameters,
log-normal between-subject variability and log-normal residual error. They are for trying the
tools (fitting, reports, simulation), not for clinical conclusions.

Usage::

    python datasets/generate.py [--seed 2026] [--out datasets]

writes, for each trial, ``<name>.csv`` (NONMEM columns; a first comment line says SIMULATED)
and ``<name>.meta.json`` (generating parameters, seed, units, design). The same seed gives
byte-identical files (values are rounded to 4 significant digits).

Trials
------
``il2_lowdose_sc``
    48 subjects in 4 arms of 12: 0.33, 1 and 3 MIU SC daily for 5 days, and a single
    1 MIU/m2 SC dose. IL-2 (DVID 1, IU/mL) on day 1 and day 5 with a quantification limit
    (BLQ/LLOQ columns), Treg (DVID 2) and NK (DVID 3) counts (cells/µL) over 28 days;
    covariates WT (kg), BSA (m2), AGE (years), SEX (0 male, 1 female), ARM.
``il2_highdose_iv``
    24 subjects, 600,000 IU/kg as 15-min IV infusions every 8 h, up to 14 doses, with doses
    held (toxicity) and courses stopped early as in practice; rich IL-2 sampling after dose 1
    (day 1) and dose 13 (day 5), daily Treg and NK counts for 3 weeks.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DEFAULT_SEED = 2026

#: Between-subject SD (log scale) used to generate the data; other parameters at defaults.
OMEGA = {"CL": 0.3, "V1": 0.2, "KA": 0.3, "VMAX": 0.3, "EMAX_T": 0.3, "EC50_T": 0.3,
         "TREG0": 0.3, "EMAX_N": 0.3, "NK0": 0.3}
#: Log-normal residual SD per output (DVID).
SIGMA = {1: 0.2, 2: 0.12, 3: 0.12}
#: Quantification limit of the IL-2 assay (IU/mL; about 9 pg/mL at 61 pg per IU).
LLOQ = 0.15
SIG_DIGITS = 4

LOW_DOSE_ARMS = {
    1: "0.33 MIU SC daily x5",
    2: "1 MIU SC daily x5",
    3: "3 MIU SC daily x5",
    4: "1 MIU/m2 SC once",
}
LOW_DOSE_PK_TIMES = [0.0, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 24.0,
                     96.0, 96.5, 97.0, 98.0, 100.0, 102.0, 104.0, 108.0, 120.0]
LOW_DOSE_PD_DAYS = [0, 1, 2, 3, 4, 5, 7, 10, 14, 21, 28]

HIGH_DOSE_TEXT = "600000 IU/kg IV 15min q8h x14"
HIGH_DOSE_PK_TIMES = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0,
                      96.0, 96.25, 96.5, 96.75, 97.0, 97.5, 98.0, 99.0, 100.0, 102.0, 104.0]
HIGH_DOSE_PD_DAYS = list(range(0, 22))

COLUMNS = ["ID", "TIME", "AMT", "RATE", "EVID", "CMT", "DV", "MDV", "DVID", "BLQ", "LLOQ"]
UNITS = {
    "TIME": "h", "AMT": "IU", "RATE": "IU/h", "DV": "DVID 1: IU/mL; DVID 2, 3: cells/uL",
    "LLOQ": "IU/mL (DVID 1 only)", "WT": "kg", "BSA": "m2 (Mosteller)", "AGE": "years",
    "SEX": "0 male, 1 female", "ARM": "arm number (see arms)",
}


def _round(x: np.ndarray, digits: int = SIG_DIGITS) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    out = np.zeros_like(x)
    nz = np.isfinite(x) & (x != 0)
    mag = np.floor(np.log10(np.abs(x[nz])))
    scale = 10.0 ** (digits - 1 - mag)
    out[nz] = np.round(x[nz] * scale) / scale
    out[~np.isfinite(x)] = x[~np.isfinite(x)]
    return out


def _covariates(rng: np.random.Generator, n: int) -> pd.DataFrame:
    from il2pkpd.simulate.population import sample_covariates

    cov = sample_covariates(n, rng)
    return pd.DataFrame({
        "ID": cov["ID"].to_numpy(),
        "WT": np.round(cov["WT"].to_numpy(), 1),
        "BSA": np.round(np.sqrt(np.round(cov["WT"].to_numpy(), 1) * cov["HT"].to_numpy()
                                / 3600.0), 2),
        "AGE": np.floor(cov["AGE"].to_numpy()),
        "SEX": cov["SEX"].to_numpy(),
    })


def _parameters(model, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    typical = model.defaults()
    eta = rng.standard_normal((n, len(OMEGA)))
    params = {}
    for name, value in typical.items():
        if name in OMEGA:
            params[name] = value * np.exp(OMEGA[name] * eta[:, list(OMEGA).index(name)])
        else:
            params[name] = np.full(n, float(value))
    return params


def _simulate(model, regimens, cov, params, obs_times):
    """Predictions (n, 3, n_times) for per-subject regimens at shared observation times."""
    from il2pkpd.simulate.dosing import dose_schedule
    from il2pkpd.simulate.runner import system_for_model
    from il2pkpd.solve import Doses, solve_population

    system = system_for_model(model)
    scheds = [dose_schedule(r, model, cov.iloc[[i]]) for i, r in enumerate(regimens)]
    width = max(len(s.time) for s in scheds)

    def pad(values, fill):
        return np.stack([np.concatenate([v, np.full(width - len(v), fill)]) for v in values])

    doses = Doses(time=pad([s.time for s in scheds], np.inf),
                  amount=pad([s.amount[0] for s in scheds], 0.0),
                  cmt=pad([s.cmt for s in scheds], scheds[0].cmt[0]).astype(np.int64),
                  duration=pad([s.duration for s in scheds], 0.0))
    p = {k: v for k, v in params.items() if k in system.param_names}
    sol = solve_population(system, p, doses, np.asarray(obs_times, float), rtol=1e-8,
                           max_steps=200000)
    status = np.asarray(sol.status)
    if np.any(status != 0):
        raise RuntimeError(f"solver failed for subjects {np.flatnonzero(status) + 1}")
    return np.asarray(sol.outputs), scheds


def _records(model, regimens, cov, params, pk_times, pd_times, rng, extra_cov):
    times = np.unique(np.concatenate([pk_times, pd_times]))
    pred, scheds = _simulate(model, regimens, cov, params, times)
    out_cmt = {o.dvid: o.cmt for o in model.outputs}
    rows = []
    for i in range(len(cov)):
        sid = int(cov["ID"].iloc[i])
        s = scheds[i]
        rate = np.where(s.duration > 0, s.amount[0] / np.where(s.duration > 0, s.duration, 1),
                        0.0)
        for t, a, r, c in zip(s.time, s.amount[0], rate, s.cmt, strict=True):
            rows.append((sid, t, 1, a, r, 1, int(c), np.nan, 1, 1))
        for dvid, tlist in ((1, pk_times), (2, pd_times), (3, pd_times)):
            for t in tlist:
                f = pred[i, dvid - 1, np.searchsorted(times, t)]
                dv = f * np.exp(SIGMA[dvid] * rng.standard_normal())
                rows.append((sid, t, 0, 0.0, 0.0, 0, out_cmt[dvid], dv, dvid, 0))
    df = pd.DataFrame(rows, columns=["ID", "TIME", "ORDER", "AMT", "RATE", "EVID", "CMT", "DV",
                                     "DVID", "MDV"])
    # observations before doses at equal times (they see the pre-dose value)
    df = df.sort_values(["ID", "TIME", "ORDER", "DVID"], kind="stable").drop(columns="ORDER")
    df["DV"] = _round(df["DV"].to_numpy())
    df["AMT"] = _round(df["AMT"].to_numpy(), 6)
    df["RATE"] = _round(df["RATE"].to_numpy(), 6)
    il2 = (df["EVID"] == 0) & (df["DVID"] == 1)
    blq = il2 & (df["DV"] < LLOQ)
    df["BLQ"] = blq.astype(int)
    df["LLOQ"] = np.where(il2, LLOQ, np.nan)
    df.loc[blq, "DV"] = np.nan
    cov_cols = cov.set_index("ID")
    for c in cov_cols.columns:
        df[c] = df["ID"].map(cov_cols[c])
    for c, v in extra_cov.items():
        df[c] = df["ID"].map(v)
    return df.reset_index(drop=True)


def _write(df: pd.DataFrame, name: str, meta: dict, out: Path) -> tuple[Path, Path]:
    buf = io.StringIO()
    buf.write(f"# SIMULATED DATA, not from patients: generated by datasets/generate.py "
              f"--seed {meta['seed']} from model il2_pkpd; see {name}.meta.json\n")
    df.to_csv(buf, index=False, na_rep=".", float_format="%.6g", lineterminator="\n")
    text = buf.getvalue()
    csv = out / f"{name}.csv"
    meta = dict(meta, file=csv.name, sha256=hashlib.sha256(text.encode()).hexdigest(),
                rows=len(df), subjects=int(df["ID"].nunique()))
    out.mkdir(parents=True, exist_ok=True)
    csv.write_text(text, encoding="utf-8")
    js = out / f"{name}.meta.json"
    js.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return csv, js


def _common_meta(model, seed: int) -> dict:
    model_text = Path(model.path).read_bytes() + Path(model.ode.path).read_bytes()
    return {
        "label": "SIMULATED",
        "warning": "Simulated from an illustrative model; not patient data. Do not use for "
                   "clinical decisions.",
        "generator": "datasets/generate.py",
        "seed": seed,
        "model": "il2_pkpd",
        "model_sha256": hashlib.sha256(model_text).hexdigest(),
        "typical_values": {k: v for k, v in model.defaults().items()
                           if not k.startswith(("TLAG", "F")) or k in ("TLAG1", "F1")},
        "between_subject_sd_log": OMEGA,
        "residual_error": {"model": "log-normal: DV = prediction * exp(sd * N(0,1))",
                           "sd_by_dvid": {str(k): v for k, v in SIGMA.items()}},
        "lloq_il2_iu_per_ml": LLOQ,
        "blq_rule": "IL-2 values below LLOQ have BLQ = 1 and DV missing ('.')",
        "outputs": {"1": "IL-2 serum concentration (IU/mL)", "2": "Treg count (cells/uL)",
                    "3": "NK count (cells/uL)"},
        "units": UNITS,
        "covariate_distribution": "il2pkpd.simulate.population.ADULT (sex 50/50, height "
                                  "normal, weight log-normal), BSA by Mosteller",
        "solver": "il2pkpd.solve Rodas4, rtol 1e-8",
        "rounding": f"DV to {SIG_DIGITS} significant digits",
    }


def generate_low_dose(model, seed: int, out: Path) -> tuple[Path, Path]:
    """The low-dose SC trial (48 subjects, 4 arms)."""
    from il2pkpd.simulate import parse_regimen

    rng = np.random.default_rng([seed, 1])
    n_per_arm = 12
    arms = np.repeat(list(LOW_DOSE_ARMS), n_per_arm)
    n = len(arms)
    cov = _covariates(rng, n)
    params = _parameters(model, rng, n)
    regimens = [parse_regimen(LOW_DOSE_ARMS[a]) for a in arms]
    pd_times = [24.0 * d for d in LOW_DOSE_PD_DAYS]
    df = _records(model, regimens, cov, params, LOW_DOSE_PK_TIMES, pd_times, rng,
                  {"ARM": dict(zip(cov["ID"], arms.astype(float), strict=True))})
    df = df[COLUMNS + ["WT", "BSA", "AGE", "SEX", "ARM"]]
    meta = _common_meta(model, seed)
    meta.update({
        "name": "il2_lowdose_sc",
        "design": "4 arms x 12 subjects, low-dose SC aldesleukin",
        "arms": {str(k): v for k, v in LOW_DOSE_ARMS.items()},
        "il2_sampling_h": LOW_DOSE_PK_TIMES,
        "cell_count_sampling_days": LOW_DOSE_PD_DAYS,
        "blq_fraction_il2": float(df.loc[(df["DVID"] == 1) & (df["EVID"] == 0), "BLQ"].mean()),
        "individual_parameters": _individual_table(params, cov["ID"]),
    })
    return _write(df, "il2_lowdose_sc", meta, out)


def _high_dose_regimens(rng: np.random.Generator, n: int) -> list[str]:
    """Per-subject courses: stopped after 8-14 doses, and 0-2 single doses held."""
    texts = []
    last = rng.choice(np.arange(8, 15), size=n, p=np.array([1, 1, 2, 2, 3, 3, 3]) / 15)
    for k in last:
        held = set(range(int(k) + 1, 15))
        n_single = rng.choice([0, 1, 2], p=[0.5, 0.3, 0.2])
        if n_single:
            held |= set(int(d) for d in rng.choice(np.arange(3, int(k)), size=n_single,
                                                   replace=False))
        text = HIGH_DOSE_TEXT
        if held:
            text += " hold " + ",".join(str(d) for d in sorted(held))
        texts.append(text)
    return texts


def generate_high_dose(model, seed: int, out: Path) -> tuple[Path, Path]:
    """The high-dose IV trial (24 subjects)."""
    from il2pkpd.simulate import parse_regimen

    rng = np.random.default_rng([seed, 2])
    n = 24
    cov = _covariates(rng, n)
    params = _parameters(model, rng, n)
    texts = _high_dose_regimens(rng, n)
    regimens = [parse_regimen(t) for t in texts]
    pd_times = [24.0 * d for d in HIGH_DOSE_PD_DAYS]
    df = _records(model, regimens, cov, params, HIGH_DOSE_PK_TIMES, pd_times, rng, {})
    df = df[COLUMNS + ["WT", "BSA", "AGE", "SEX"]]
    meta = _common_meta(model, seed)
    meta.update({
        "name": "il2_highdose_iv",
        "design": "24 subjects, 600,000 IU/kg IV over 15 min every 8 h, up to 14 doses, with "
                  "doses held and courses stopped early",
        "regimens": {str(int(i)): t for i, t in zip(cov["ID"], texts, strict=True)},
        "doses_given": {str(int(i)): r.n_doses for i, r in zip(cov["ID"], regimens,
                                                                strict=True)},
        "il2_sampling_h": HIGH_DOSE_PK_TIMES,
        "cell_count_sampling_days": HIGH_DOSE_PD_DAYS,
        "blq_fraction_il2": float(df.loc[(df["DVID"] == 1) & (df["EVID"] == 0), "BLQ"].mean()),
        "individual_parameters": _individual_table(params, cov["ID"]),
    })
    return _write(df, "il2_highdose_iv", meta, out)


def _individual_table(params: dict, ids) -> dict:
    return {name: [float(x) for x in _round(params[name], 6)] for name in OMEGA} | {
        "ID": [int(i) for i in ids]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder")
    args = parser.parse_args(argv)
    import il2pkpd
    from il2pkpd.models import load_model

    il2pkpd.enable_x64()
    model = load_model("il2_pkpd")
    for path in (*generate_low_dose(model, args.seed, args.out),
                 *generate_high_dose(model, args.seed, args.out)):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

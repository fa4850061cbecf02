"""The bundled simulated trial datasets: labelled, valid, small, and reproducible from the seed."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from il2pkpd._paths import DATASETS_DIR
from il2pkpd.data import read_dataset
from il2pkpd.models import load_model
from il2pkpd.simulate import parse_regimen

NAMES = ("il2_lowdose_sc", "il2_highdose_iv")


def meta(name):
    return json.loads((DATASETS_DIR / f"{name}.meta.json").read_text())


@pytest.fixture(scope="module")
def model():
    return load_model("il2_pkpd")


@pytest.mark.parametrize("name", NAMES)
def test_files_are_labelled_small_and_described(name):
    csv = DATASETS_DIR / f"{name}.csv"
    assert csv.stat().st_size < 300_000
    assert csv.read_text().splitlines()[0].startswith("# SIMULATED DATA")
    m = meta(name)
    assert m["label"] == "SIMULATED" and isinstance(m["seed"], int)
    assert m["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    for key in ("typical_values", "between_subject_sd_log", "residual_error", "units",
                "lloq_il2_iu_per_ml", "model_sha256"):
        assert key in m, key
    assert (DATASETS_DIR / "README.md").read_text().count("SIMULATED") >= 1


@pytest.mark.parametrize("name", NAMES)
def test_files_pass_read_dataset_validation(name, model):
    ds = read_dataset(DATASETS_DIR / f"{name}.csv", model=model)
    assert ds.warnings == ()
    assert {"WT", "BSA", "AGE", "SEX"} <= set(ds.covariates)
    df = ds.df
    obs = df[df["EVID"] == 0]
    assert set(obs["DVID"]) == {1, 2, 3}
    il2 = obs[obs["DVID"] == 1]
    blq = il2["BLQ"].mean()
    assert 0.05 < blq < 0.5                      # some, not most, below the limit
    assert (il2.loc[il2["BLQ"], "LLOQ"] == meta(name)["lloq_il2_iu_per_ml"]).all()
    assert (obs.loc[~obs["BLQ"], "DV"] > 0).all()
    assert (obs[obs["DVID"] > 1]["BLQ"] == False).all()  # noqa: E712


def test_low_dose_design(model):
    df = read_dataset(DATASETS_DIR / "il2_lowdose_sc.csv", model=model).df
    arms = df.groupby("ID")["ARM"].first()
    assert arms.value_counts().to_dict() == {1.0: 12, 2.0: 12, 3.0: 12, 4.0: 12}
    doses = df[df["EVID"] == 1]
    assert set(doses["CMT"]) == {1}
    per_subject = doses.groupby("ID")["AMT"].agg(["count", "first"])
    expected = {1: (5, 0.33e6), 2: (5, 1e6), 3: (5, 3e6)}
    for sid, arm in arms.items():
        if arm in expected:
            assert tuple(per_subject.loc[sid]) == pytest.approx(expected[arm])
        else:   # 1 MIU/m2 once
            bsa = df.loc[df["ID"] == sid, "BSA"].iloc[0]
            assert per_subject.loc[sid, "count"] == 1
            assert per_subject.loc[sid, "first"] == pytest.approx(1e6 * bsa, rel=1e-5)
    counts = df[(df["EVID"] == 0) & (df["DVID"] == 2)]
    assert counts["TIME"].max() == 28 * 24


def test_high_dose_design_with_held_doses(model):
    df = read_dataset(DATASETS_DIR / "il2_highdose_iv.csv", model=model).df
    m = meta("il2_highdose_iv")
    doses = df[df["EVID"] == 1]
    assert df["ID"].nunique() == 24
    assert set(doses["CMT"]) == {2}
    rate = doses["AMT"] / doses["RATE"]
    np.testing.assert_allclose(rate, 0.25, rtol=1e-5)          # 15-min infusions
    wt = df.groupby("ID")["WT"].first()
    np.testing.assert_allclose(doses["AMT"], 6e5 * doses["ID"].map(wt), rtol=1e-5)
    n_given = doses.groupby("ID").size()
    assert n_given.max() <= 14 and n_given.min() < 14
    for sid, text in m["regimens"].items():
        reg = parse_regimen(text)
        np.testing.assert_allclose(doses.loc[doses["ID"] == int(sid), "TIME"],
                                   reg.dose_table()["TIME"])
    il2_times = set(df[(df["EVID"] == 0) & (df["DVID"] == 1)]["TIME"])
    assert {0.25, 1.0, 96.25, 100.0} <= il2_times


def test_same_seed_reproduces_the_files_exactly(tmp_path):
    seed = meta("il2_lowdose_sc")["seed"]
    script = DATASETS_DIR / "generate.py"
    out = subprocess.run([sys.executable, str(script), "--seed", str(seed), "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for name in NAMES:
        for suffix in (".csv", ".meta.json"):
            new = (tmp_path / f"{name}{suffix}").read_bytes()
            old = (DATASETS_DIR / f"{name}{suffix}").read_bytes()
            assert new == old, f"{name}{suffix} differs"

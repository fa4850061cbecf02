"""Padded per-subject arrays: padding never changes values, shapes fixed, a jit-able pytree."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from il2pkpd.data import SubjectArrays, read_dataset, to_subject_arrays
from il2pkpd.errors import OptionError

FIELDS = {"TIME": "time", "AMT": "amt", "RATE": "rate", "II": "ii", "ADDL": "addl", "SS": "ss",
          "EVID": "evid", "CMT": "cmt", "MDV": "mdv", "DV": "dv", "DVID": "dvid", "BLQ": "blq",
          "LLOQ": "lloq", "LINE": "line"}


@pytest.fixture(scope="module")
def friberg(shared_benchmarks):
    return read_dataset(shared_benchmarks / "friberg_multiple_dose.csv")


def _small():
    return read_dataset(pd.DataFrame({
        "ID": [7, 7, 7, 3, 3, 7],
        "TIME": [0.0, 1.0, 2.0, 0.0, 4.0, 0.5],
        "AMT": [10.0, 0.0, 0.0, 5.0, 0.0, 0.0],
        "DV": [None, 2.0, None, None, 1.0, 0.7],
        "MDV": [1, 0, 1, 1, 0, 0],
        "WT": [70.0, 71.0, None, 60.0, None, 80.0],
    }))


def test_padding_never_changes_values(friberg):
    arr = to_subject_arrays(friberg)
    df = friberg.df
    subj = friberg.subject_index
    assert arr.shape == (12, int(np.bincount(subj).max()))
    for s in range(friberg.n_subjects):
        rows = df[subj == s]
        n = len(rows)
        assert arr.n_records[s] == n and arr.mask[s].sum() == n and arr.mask[s, :n].all()
        assert arr.ids[s] == rows["ID"].iloc[0]
        for col, name in FIELDS.items():
            np.testing.assert_array_equal(getattr(arr, name)[s, :n], rows[col].to_numpy())
        np.testing.assert_array_equal(arr.cov[s, :n], rows[list(friberg.covariates)].to_numpy())
        np.testing.assert_array_equal(arr.row[s, :n], np.flatnonzero(subj == s))


def test_padded_entries_are_finite_and_neutral():
    ds = _small()
    arr = to_subject_arrays(ds, pad_to=6)
    pad = ~arr.mask
    assert pad.sum() == 3 * 6 - 6
    assert (arr.amt[pad] == 0).all() and (arr.evid[pad] == 2).all() and (arr.mdv[pad] == 1).all()
    assert (arr.dv[pad] == 0).all() and (arr.row[pad] == -1).all() and (arr.line[pad] == -1).all()
    assert np.isfinite(arr.time).all() and np.isfinite(arr.cov).all()
    # time padding repeats the last time, so times never decrease along a row
    assert (np.diff(arr.time, axis=1) >= 0).all()
    # real missing DV stays NaN (never filled)
    assert np.isnan(arr.dv[0, 2]) and np.isnan(arr.dv[0, 0])


def test_reappearing_id_is_its_own_row():
    arr = to_subject_arrays(_small())
    assert arr.ids.tolist() == [7, 3, 7]
    assert arr.n_records.tolist() == [3, 2, 1]
    # covariates carried within the block only: the last block of ID 7 has its own WT
    assert arr.cov[2, 0, 0] == 80.0 and arr.cov[0, 2, 0] == 71.0
    assert arr.cov_names == ("WT",)


def test_pad_to_fixes_shapes_across_datasets(friberg):
    a = to_subject_arrays(_small(), pad_to=80)
    b = to_subject_arrays(friberg, pad_to=80)
    assert a.time.shape[1] == b.time.shape[1] == 80
    assert a.cov.shape == (3, 80, 1) and b.cov.shape == (12, 80, 2)
    with pytest.raises(OptionError, match="pad_to=10 is smaller than the longest subject"):
        to_subject_arrays(friberg, pad_to=10)


def test_pytree_through_jit_matches_numpy(friberg):
    arr = to_subject_arrays(friberg)
    leaves, treedef = jax.tree_util.tree_flatten(arr)
    assert len(leaves) == 19
    assert jax.tree_util.tree_unflatten(treedef, leaves).cov_names == arr.cov_names

    @jax.jit
    def summed_observations(a: SubjectArrays):
        used = a.mask & (a.evid == 0) & (a.mdv == 0)
        return jnp.sum(jnp.where(used, a.dv, 0.0), axis=1), a

    got, back = summed_observations(arr)
    expected = friberg.observations.groupby(friberg.subject_index[
        friberg.observations.index], sort=True)["DV"].sum().to_numpy()
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-13)
    assert isinstance(back, SubjectArrays) and back.cov_names == arr.cov_names
    assert back.time.dtype == jnp.float64


def test_vmap_over_subjects(friberg):
    arr = to_subject_arrays(friberg)
    n_obs = jax.vmap(lambda a: jnp.sum(a.mask & (a.evid == 0)))(arr)
    assert int(n_obs.sum()) == 816


def test_empty_covariates_shape():
    ds = read_dataset(pd.DataFrame({"ID": [1, 2], "TIME": [0.0, 0.0], "DV": [1.0, 2.0]}))
    arr = to_subject_arrays(ds)
    assert arr.cov.shape == (2, 1, 0) and arr.shape == (2, 1)

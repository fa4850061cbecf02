"""Model files: bundled models load; malformed files are rejected with file and key."""

import textwrap

import pytest

from il2pkpd.errors import ModelFileError
from il2pkpd.models import list_models, load_model

EXPECTED = {
    "one_cmt_iv": (("CL", "V"), {1: "central"}),
    "one_cmt_oral": (("CL", "V", "KA"), {1: "depot", 2: "central"}),
    "two_cmt_iv": (("CL", "V1", "Q", "V2"), {1: "central", 2: "peripheral"}),
    "two_cmt_oral": (("CL", "V1", "Q", "V2", "KA"), {1: "depot", 2: "central", 3: "peripheral"}),
    "three_cmt_iv": (("CL", "V1", "Q2", "V2", "Q3", "V3"),
                     {1: "central", 2: "peripheral1", 3: "peripheral2"}),
    "one_cmt_oral_mm": (("VMAX", "KM", "V", "KA"), {1: "depot", 2: "central"}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_model_has_issue_parameter_names_and_numbering(name):
    m = load_model(name)
    params, cmts = EXPECTED[name]
    assert m.required_parameters == params
    assert dict(m.compartments) == cmts
    for n in m.dosing_cmts:
        assert m.parameter(f"TLAG{n}").default == 0.0
        assert m.parameter(f"F{n}").default == 1.0
        assert m.parameter(f"R{n}").default is None


def test_all_bundled_models_load():
    for name in list_models():
        load_model(name)


def test_two_cmt_iv_carries_benchmark_priors():
    m = load_model("two_cmt_iv")
    import math
    for name, mean in {"CL": 4, "V1": 70, "Q": 4, "V2": 50}.items():
        prior = m.parameter(name).prior
        assert prior["dist"] == "lognormal"
        assert prior["loc"] == pytest.approx(math.log(mean))
        assert prior["scale"] == 1.0


def _write(tmp_path, text, name="m.toml", py=None):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    if py is not None:
        (tmp_path / "m.py").write_text(textwrap.dedent(py))
    return p


def test_all_problems_reported_with_file_and_key(tmp_path):
    p = _write(tmp_path, """
        [model]
        name = "bad"
        structure = "two_cmt"
        colour = "red"
        [parameters.CL]
        default = -1.0
        domain = "positive"
        [parameters.V1]
        domain = "weird"
        [compartments]
        1 = "central"
        [outputs.1]
        name = "CP"
        cmt = 7
        [population]
        anything = "kept raw"
        """)
    with pytest.raises(ModelFileError) as err:
        load_model(p)
    msg = str(err.value)
    assert str(p) in msg
    for key in ("[model.colour]", "[parameters.CL.default]", "[parameters.V1.domain]",
                "[outputs.1.cmt]", "needs parameter Q", "[compartments]"):
        assert key in msg, key


def test_unknown_model_name_lists_bundled():
    with pytest.raises(ModelFileError, match="two_cmt_iv"):
        load_model("no_such_model")


def test_invalid_toml_syntax(tmp_path):
    p = _write(tmp_path, "[model\nname=1")
    with pytest.raises(ModelFileError, match="not valid TOML"):
        load_model(p)


def test_fit_spec_kept_raw(tmp_path):
    p = _write(tmp_path, """
        [model]
        structure = "one_cmt"
        [parameters.CL]
        default = 1.0
        [parameters.V]
        default = 1.0
        [compartments]
        1 = "central"
        [outputs.1]
        name = "CP"
        cmt = 1
        [population]
        iiv = ["CL", "V"]
        [residual]
        type = "proportional"
        """)
    m = load_model(p)
    assert m.fit_spec["population"] == {"iiv": ["CL", "V"]}
    assert m.fit_spec["residual"]["type"] == "proportional"


ODE_TOML = """
    [model]
    structure = "ode:m.py"
    [parameters.K]
    default = 1.0
    [states]
    names = ["a"]
    [compartments]
    1 = "a"
    [outputs.1]
    name = "A"
    cmt = 1
    """


def test_ode_file_missing_function(tmp_path):
    p = _write(tmp_path, ODE_TOML, py="def rhs(t, y, p):\n    return {'a': -p['K'] * y['a']}\n")
    with pytest.raises(ModelFileError, match="outputs"):
        load_model(p)


def test_ode_file_wrong_state_names(tmp_path):
    p = _write(tmp_path, ODE_TOML, py="""
        def rhs(t, y, p):
            return {'b': -p['K'] * y['a']}
        def outputs(y, p):
            return {'A': y['a']}
        """)
    with pytest.raises(ModelFileError, match="one derivative per state"):
        load_model(p)


def test_ode_file_unknown_parameter(tmp_path):
    p = _write(tmp_path, ODE_TOML, py="""
        def rhs(t, y, p):
            return {'a': -p['KEL'] * y['a']}
        def outputs(y, p):
            return {'A': y['a']}
        """)
    with pytest.raises(ModelFileError, match="KEL"):
        load_model(p)


def test_ode_file_that_raises_on_import(tmp_path):
    p = _write(tmp_path, ODE_TOML, py="raise RuntimeError('boom')\n")
    with pytest.raises(ModelFileError, match="boom"):
        load_model(p)

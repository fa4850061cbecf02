"""Progress lines of NUTS runs for logs (``run_nuts(progress_bar="log")``).

References: the iterations each chain reports (lines only once every chain has passed one),
and the same seed run without the lines (the draws must not change).
"""

import threading

import numpy as np
import pytest
from test_inference_fit import TRUE, simulate
from test_inference_model import make_df

from il2pkpd.errors import OptionError
from il2pkpd.inference import prepare, samplers
from il2pkpd.inference.samplers import ProgressLog


def test_a_line_once_every_chain_has_passed_the_iteration():
    lines = []
    log = ProgressLog(chains=3, warmup=40, samples=60, write=lines.append)
    assert log.every == 5                      # 100 iterations in 20 lines
    log.report(5)
    log.report(10)                             # a fast chain runs ahead
    assert lines == []
    log.report(5)
    log.report(5)
    assert len(lines) == 1 and "past iteration 5 of 100 (warm-up)" in lines[0]
    assert "about" in lines[0] and lines[0].startswith("NUTS: 3 chains")
    log.report(np.array([10, 10]))             # vectorized chains report together
    assert "past iteration 10 of 100" in lines[1]
    for _ in range(3):
        log.report(100)
    assert "past iteration 100 of 100 (sampling)" in lines[2] and "left" not in lines[2]
    assert log.lines == lines


def test_reports_from_many_threads_give_each_line_once():
    lines = []
    log = ProgressLog(chains=4, warmup=100, samples=100, write=lines.append, every=1)

    def chain():
        for i in range(1, 201):
            log.report(i)

    threads = [threading.Thread(target=chain) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    its = [int(line.split("past iteration ")[1].split()[0]) for line in lines]
    assert sorted(its) == list(range(1, 201))


@pytest.fixture(scope="module")
def small_pm():
    pm, *_ = prepare("one_cmt_iv", make_df(n=8), residual={"CP": "lognormal"})
    return simulate(pm, TRUE, seed=3)


def test_nuts_writes_the_lines_and_keeps_its_draws(small_pm, capsys):
    """Vectorized chains (they report as one array); the pooled test below runs them one
    after another, the CLI test in parallel."""
    pm = small_pm
    kw = dict(chains=2, warmup=30, samples=10, seed=2, chain_method="vectorized")
    m0, _ = samplers.run_nuts(pm, pm.observed, progress_bar=False, **kw)
    m1, info = samplers.run_nuts(pm, pm.observed, progress_bar="log", **kw)
    lines = info["progress_lines"]
    assert [int(x.split("past iteration ")[1].split()[0]) for x in lines] == list(
        range(2, 41, 2))
    assert all(x.startswith("NUTS: 2 chains") for x in lines)
    assert "(warm-up)" in lines[14] and "(sampling)" in lines[15]
    assert capsys.readouterr().err.count("past iteration") == 20
    a, b = m0.get_samples(group_by_chain=True), m1.get_samples(group_by_chain=True)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_pooled_metric_counts_on_through_the_second_stage(small_pm):
    pm = small_pm
    _, info = samplers.run_nuts(pm, pm.observed, chains=2, warmup=40, samples=20, seed=1,
                                chain_method="sequential", pooled_metric=True,
                                progress_bar="log")
    its = [int(x.split("past iteration ")[1].split()[0]) for x in info["progress_lines"]]
    assert its == list(range(3, 61, 3))


def test_other_progress_words_are_refused(small_pm):
    with pytest.raises(OptionError, match="progress_bar"):
        samplers.run_nuts(small_pm, small_pm.observed, chains=1, warmup=5, samples=5,
                          progress_bar="bar")

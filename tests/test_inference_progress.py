"""Progress lines of NUTS runs for logs (``run_nuts(progress_bar="log")``).

References: the iterations each chain reports (lines only once every chain has passed one),
and the same seed run without the lines (the draws must not change).
"""

import threading

import numpy as np
import pytest

from il2pkpd.errors import OptionError
from il2pkpd.inference import samplers
from il2pkpd.inference.samplers import ProgressLog


def _pct(line):
    return int(line.split("NUTS: ")[1].split("%")[0])


def test_a_line_per_twentieth_of_all_chains_iterations():
    lines = []
    log = ProgressLog(chains=3, warmup=40, samples=63, write=lines.append)
    assert log.every == 6 and log.marks[-2:] == [102, 103]  # the last iteration reports too
    log.report(6)
    log.report(12)                             # a fast chain runs ahead
    assert lines == []
    log.report(6)                              # 3 reports: 6 + 6 + 6 of 309 iterations
    assert len(lines) == 1 and lines[0].startswith("NUTS: 6% of 3 x 103 iterations after")
    assert "every chain past" not in lines[0] and "left" not in lines[0]   # compile time
    log.report(np.array([6, 12, 12]))          # vectorized chains report together
    assert len(lines) == 2 and _pct(lines[1]) == 12
    assert "every chain past iteration 12 (warm-up)" in lines[1]
    assert "s left at the recent pace" in lines[1]
    for it in log.marks[2:]:
        log.report(np.array([it, it, it]))
    assert _pct(lines[-1]) == 100 and "left" not in lines[-1]
    assert "every chain past iteration 103 (sampling)" in lines[-1]
    assert len(lines) == len(log.marks) == 18 and log.lines == lines


def test_chains_one_after_another_get_steady_lines():
    lines = []
    log = ProgressLog(chains=2, warmup=50, samples=50, write=lines.append)
    for _ in range(2):                         # chain 1, then chain 2
        for it in log.marks:
            log.report(it)
    assert [_pct(x) for x in lines] == list(range(5, 101, 5))
    assert "every chain past iteration 10 " in lines[10]
    assert all("every chain past" not in x for x in lines[:10])


def test_reports_from_many_threads_give_every_line():
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
    assert len(lines) == 200 and _pct(lines[-1]) == 100
    assert "every chain past iteration 200" in lines[-1]


@pytest.mark.parametrize("chain_method", ["sequential", "vectorized"])
def test_nuts_writes_the_lines_and_keeps_its_draws(small_pm, capsys, chain_method):
    """Parallel chains: the CLI test (a fresh process with a device per chain)."""
    pm = small_pm
    kw = dict(chains=2, warmup=30, samples=10, seed=2, chain_method=chain_method)
    m0, _ = samplers.run_nuts(pm, pm.observed, progress_bar=False, **kw)
    m1, info = samplers.run_nuts(pm, pm.observed, progress_bar="log", **kw)
    lines = info["progress_lines"]
    assert [_pct(x) for x in lines] == list(range(5, 101, 5))
    assert all(x.startswith("NUTS: ") and "of 2 x 40 iterations" in x for x in lines)
    if chain_method == "vectorized":
        assert "every chain past iteration 30 (warm-up)" in lines[14]
        assert "every chain past iteration 32 (sampling)" in lines[15]
    assert capsys.readouterr().err.count("iterations after") == 20
    a, b = m0.get_samples(group_by_chain=True), m1.get_samples(group_by_chain=True)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_pooled_metric_counts_on_through_the_second_stage(small_pm):
    pm = small_pm
    _, info = samplers.run_nuts(pm, pm.observed, chains=2, warmup=40, samples=20, seed=1,
                                chain_method="sequential", pooled_metric=True,
                                progress_bar="log")
    lines = info["progress_lines"]
    assert [_pct(x) for x in lines] == list(range(5, 101, 5))
    # chains one after the other in each stage; the second stage's marks count on from 20
    assert "2 x 60 iterations" in lines[-1]
    assert "every chain past iteration 60 (sampling)" in lines[-1]
    # stage 2 compiles anew: its first line (the first past 20 of 60 iterations each) has no
    # time-left estimate
    first2 = next(x for x in lines if _pct(x) > 100 * 20 / 60)
    assert "left" not in first2 and "left" in lines[1]


def test_other_progress_words_are_refused(small_pm):
    with pytest.raises(OptionError, match="progress_bar"):
        samplers.run_nuts(small_pm, small_pm.observed, chains=1, warmup=5, samples=5,
                          progress_bar="bar")

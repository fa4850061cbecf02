"""solve_population spreads chunks over several devices with the same results (forced 2 CPU
devices, in a subprocess: the device count is fixed when JAX starts)."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from il2pkpd.solve import Doses, solve_population
    from il2pkpd.solve.il2 import il2_system
    assert len(jax.devices()) == 2
    system = il2_system()
    rng = np.random.default_rng(5)
    n = 37
    params = {k: v * np.exp(0.3 * rng.standard_normal(n)) for k, v in system.defaults.items()
              if k not in ("F1", "IMAX")}
    doses = Doses(24.0 * np.arange(3), np.full(3, 1e6), np.ones(3, int))
    t = np.arange(0.0, 240.0001, 12.0)
    kw = dict(rtol=1e-5, chunk_size=16, lanes=8)
    both = solve_population(system, params, doses, t, **kw)
    one = solve_population(system, params, doses, t, devices=jax.devices()[:1], **kw)
    assert both.outputs.shape == (n, 3, t.size)
    np.testing.assert_allclose(np.asarray(both.outputs), np.asarray(one.outputs), rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(both.n_steps), np.asarray(one.n_steps))
    assert np.all(np.asarray(both.status) == 0)
    print("OK")
""")


def test_two_devices_give_the_single_device_results():
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("OK")

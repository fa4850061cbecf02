"""JAX's persistent compilation cache as the CLI turns it on (il2pkpd._config), in
subprocesses: the folder comes from the environment, a second process loads what the first
compiled and gets the same numbers, and IL2PKPD_NO_CACHE turns it off."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json
    import jax
    import jax.numpy as jnp
    from il2pkpd._config import enable_compilation_cache, enable_x64

    enable_x64()
    folder = enable_compilation_cache()
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.append(event)
        if event == "/jax/compilation_cache/cache_hits" else None)

    @jax.jit
    def f(x):
        return jnp.cumsum(jnp.exp(-0.1 * x) * jnp.sin(x)) @ x

    value = float(f(jnp.linspace(0.0, 10.0, 101)))
    print(json.dumps({"folder": folder, "value": value, "hits": len(hits)}))
""")


def _run(env):
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_cached_program(tmp_path):
    env = dict(os.environ, IL2PKPD_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("IL2PKPD_NO_CACHE", None)
    first = _run(env)
    assert first["folder"] == str(tmp_path / "cache")
    assert first["hits"] == 0
    assert any((tmp_path / "cache").iterdir())
    second = _run(env)
    assert second["hits"] >= 1
    assert second["value"] == first["value"]


def test_no_cache_variable_turns_it_off(tmp_path):
    env = dict(os.environ, IL2PKPD_CACHE_DIR=str(tmp_path / "cache"), IL2PKPD_NO_CACHE="1")
    got = _run(env)
    assert got["folder"] is None
    assert not (tmp_path / "cache").exists()

"""The vectorisable float64 log / exp / pow of il2pkpd.solve._fastmath against numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from il2pkpd.solve._fastmath import fast_exp, fast_log, pow_pos


def test_log_exp_pow_match_numpy_to_1e14():
    rng = np.random.default_rng(3)
    x = np.concatenate([np.exp(rng.uniform(-700.0, 700.0, 4000)), [1.0, 2.0, 0.5, 1e-300,
                                                                     1.7e308]])
    np.testing.assert_allclose(np.asarray(jax.jit(fast_log)(jnp.asarray(x))), np.log(x),
                               rtol=1e-14, atol=1e-14)
    z = np.concatenate([rng.uniform(-707.0, 709.0, 4000), [0.0, 1.0, -1.0, 700.0]])
    np.testing.assert_allclose(np.asarray(jax.jit(fast_exp)(jnp.asarray(z))), np.exp(z),
                               rtol=1e-14)
    assert float(fast_exp(-800.0)) == 0.0 and np.isinf(float(fast_exp(800.0)))
    c = np.exp(rng.uniform(-80.0, 8.0, 4000))
    a = rng.uniform(0.3, 3.0, 4000)
    np.testing.assert_allclose(np.asarray(jax.jit(pow_pos)(jnp.asarray(c), jnp.asarray(a))),
                               c ** a, rtol=1e-13)
    zero = pow_pos(jnp.asarray([0.0, -1.0]), jnp.asarray([1.3, 0.7]))
    np.testing.assert_array_equal(np.asarray(zero), [0.0, 0.0])


def test_pow_derivatives_match_closed_form():
    x, a = 0.37, 1.6
    dx, da = jax.grad(pow_pos, argnums=(0, 1))(x, a)
    assert abs(float(dx) - a * x ** (a - 1)) < 1e-13
    assert abs(float(da) - x ** a * np.log(x)) < 1e-13
    # and under vmap + jvp (how the solver differentiates), zero slope at x <= 0
    xs = jnp.asarray([0.0, -2.0, 3.0])
    _, t = jax.jvp(jax.vmap(pow_pos), (xs, jnp.full(3, 2.0)), (jnp.ones(3), jnp.zeros(3)))
    np.testing.assert_allclose(np.asarray(t), [0.0, 0.0, 6.0], rtol=1e-13)


def test_pow_float32_matches_numpy_and_stays_float32():
    rng = np.random.default_rng(5)
    c = np.exp(rng.uniform(-60.0, 8.0, 2000)).astype(np.float32)
    a = rng.uniform(0.3, 3.0, 2000).astype(np.float32)
    got = jax.jit(pow_pos)(jnp.asarray(c), jnp.asarray(a))
    assert got.dtype == jnp.float32
    ref = c.astype(float) ** a.astype(float)
    ok = ref > 1e-30   # float32 subnormals aside
    np.testing.assert_allclose(np.asarray(got, dtype=float)[ok], ref[ok], rtol=1e-5)
    _, t = jax.jvp(pow_pos, (jnp.float32(0.37), jnp.float32(1.6)),
                   (jnp.float32(1.0), jnp.float32(0.0)))
    assert t.dtype == jnp.float32 and abs(float(t) - 1.6 * 0.37 ** 0.6) < 1e-5

"""Process-wide JAX settings, applied only by entry points (CLI, tests, benchmarks).

Library code never changes JAX configuration behind the user's back; call
:func:`enable_x64` yourself before creating arrays when using the Python API.
"""

from __future__ import annotations


def enable_x64() -> None:
    """Switch JAX to float64 (must run before any JAX array is created)."""
    import jax

    jax.config.update("jax_enable_x64", True)


def check_x64() -> None:
    """Raise a clear error when float64 is off (numerics here assume it)."""
    import jax

    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            "il2pkpd needs float64: call il2pkpd.enable_x64() (or "
            "jax.config.update('jax_enable_x64', True)) before creating any JAX array."
        )

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


def enable_compilation_cache() -> str | None:
    """Keep compiled XLA programs on disk between runs (JAX's persistent compilation cache).

    The CLI calls this: a second ``il2pkpd fit`` or ``quickstart`` of the same model and data
    shapes skips most of the compile time (tens of seconds for ODE models). The folder is
    ``$IL2PKPD_CACHE_DIR`` or ``~/.cache/il2pkpd/jax``; ``IL2PKPD_NO_CACHE=1`` turns it off.
    Returns the folder, or None when off or not writable.
    """
    import os
    from pathlib import Path

    import jax

    if os.environ.get("IL2PKPD_NO_CACHE"):
        return None
    folder = Path(os.environ.get("IL2PKPD_CACHE_DIR")
                  or Path.home() / ".cache" / "il2pkpd" / "jax")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
    return str(folder)


def use_all_cpu_cores() -> int | None:
    """Expose every CPU core as a JAX CPU device (``jax_num_cpu_devices``), so that work
    sharded over devices (regimen simulation) uses all cores of a CPU-only machine.

    Must run before JAX initialises its backends; afterwards (or when ``XLA_FLAGS`` already
    sets a host device count, or ``IL2PKPD_CPU_DEVICES`` says otherwise) it does nothing.
    Returns the device count set, or None.
    """
    import os

    import jax

    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None
    n = int(os.environ.get("IL2PKPD_CPU_DEVICES") or (os.cpu_count() or 1))
    if n <= 1:
        return None
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except (RuntimeError, AttributeError):     # backends already initialised / old JAX
        return None
    return n

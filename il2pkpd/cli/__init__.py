"""The ``il2pkpd`` command line.

Each sub-command lives in its own module with a ``register(app)`` function. Bad input of any
kind (an :class:`~il2pkpd.errors.InputError`) ends with a message on stderr and exit status 2,
never a traceback.
"""

from __future__ import annotations

import sys

import typer

from il2pkpd._version import __version__
from il2pkpd.errors import InputError

app = typer.Typer(
    name="il2pkpd",
    help="Bayesian PK/PD modelling of interleukin-2 and NONMEM-style PK/PD data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"il2pkpd {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version_callback,
        is_eager=True,
    ),
) -> None:
    """Bayesian PK/PD modelling of interleukin-2 and NONMEM-style PK/PD data."""


def _register_all() -> None:
    from il2pkpd.cli import fit, predict, quickstart, report, simulate, validate

    for module in (validate, predict, fit, report, simulate, quickstart):
        module.register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``il2pkpd`` script; returns the exit status."""
    from il2pkpd._config import enable_compilation_cache, enable_x64

    enable_x64()
    enable_compilation_cache()
    try:
        app(args=argv, standalone_mode=False)
    except InputError as err:
        typer.echo(f"error: {err.render()}", err=True)
        return 2
    except FileNotFoundError as err:
        typer.echo(f"error: file not found: {err.filename or err}", err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:
        # Usage errors of the (possibly vendored) click library carry their own exit code.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

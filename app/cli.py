"""The `monoscope` command: one entry point for every pipeline stage, the server and the demo.

Commands stay thin: they turn options into a stage config and call `sae/` or `app/`. Bad input raises
MonoscopeError, which `main` prints as one line on stderr with exit code 2 (never a stack trace).
Heavy imports (torch, transformer_lens) happen inside commands so `monoscope serve` starts fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from sae.errors import MonoscopeError

cli = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Sparse autoencoders on one-layer transformer MLPs: build, analyse, browse.")

RunOpt = Annotated[Path, typer.Option("--run", help="Run folder (runs/<name>) holding every stage's output.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo the stage even if it is up to date.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]


def main() -> None:
    """Console entry point: run the CLI, turning user errors into one line and exit code 2."""
    try:
        cli(standalone_mode=False)
    except MonoscopeError as e:
        print(f"monoscope: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("monoscope: interrupted", file=sys.stderr)
        sys.exit(130)
    except (typer.Exit, SystemExit) as e:
        sys.exit(getattr(e, "exit_code", getattr(e, "code", 0)))
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(2)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()

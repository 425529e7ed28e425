"""The ``mlm-adapt`` command: a thin typer layer over the library (``commands``: train and
evaluate; ``tools``: the commands around a run; ``levers``: blend, assess and select;
``comparing``: compare), flags built from the config (``options``).

User errors (:class:`MlmAdaptError`) become one ``error:`` line and exit status 2; a bug
keeps its traceback, as does any error under ``--debug``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mlm_adapt.cli import commands, comparing, levers, tools
from mlm_adapt.errors import MlmAdaptError, TrainingInterrupted
from mlm_adapt.outputs import summaries

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Domain-adapt a masked language model on your text; check perplexity and fill-mask.",
)
app.command()(commands.train)
app.command()(commands.evaluate)
app.command()(tools.vocab)
app.command()(tools.probe)
app.command("fill-mask")(tools.fill_mask)
app.command()(levers.assess)
app.command()(levers.blend)
app.command()(levers.select)
app.command()(comparing.compare)
app.command()(tools.demo)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=lambda v: _print_version(v),
                                          help="Print the version and exit")] = False,
) -> None:
    """``--debug`` is read by :func:`main` before typer parses anything."""


def _print_version(requested: bool) -> None:
    if requested:
        from importlib.metadata import version

        print(f"mlm-adapt {version('mlm-adapt')}")
        raise typer.Exit(0)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one ``error:`` line and exit status 2."""
    summaries.setup_logging()
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, prog_name="mlm-adapt", standalone_mode=False)
    except MlmAdaptError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        sys.exit(130)
    except typer.Abort:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # bad flags or values: same one-line form as our own errors
        if debug:
            raise
        if exc.format_message():  # empty when typer already printed the help (no arguments)
            print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)

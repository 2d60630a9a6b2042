"""What every edge-* command shares: consoles, error policy, input files."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console

from edge_sdk.errors import EdgeSDKError, InvalidInputError

console = Console()
err_console = Console(stderr=True)
_state = {"verbose": False}

EXIT_INTERNAL = 1


def make_app(name: str, help_text: str) -> typer.Typer:
    """A typer app with the settings every edge-* command shares and a ``-v`` flag.

    Plain help text (no rich markup), no shell-completion commands, help when
    called without arguments, and tracebacks left to :func:`fail_on_errors`.
    """
    app = typer.Typer(
        name=name,
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )

    @app.callback()
    def _main(
        verbose: bool = typer.Option(False, "-v", "--verbose", help="Show tracebacks for errors."),
    ) -> None:
        set_verbose(verbose)

    return app


def set_verbose(value: bool) -> None:
    """Show tracebacks for user errors too."""
    _state["verbose"] = value


def setup_logging(daemon: bool = True) -> None:
    """Log to stderr (does nothing where logging is configured already).

    Args:
        daemon: INFO with timestamps, DEBUG with ``-v`` (daemons log what they
            do). False, for short commands: only warnings (INFO with ``-v``),
            as ``mqtt warning: ...`` lines, so that a broker's fallback or a refused
            probe reads as one line beside the command's own output.
    """
    verbose = _state["verbose"]
    if daemon:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_ShortFormatter())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


class _ShortFormatter(logging.Formatter):
    """``mqtt warning: message``: the area first, so the command's own ``error:`` line stays one."""

    def format(self, record: logging.LogRecord) -> str:
        parts = record.name.split(".")
        area = parts[1] if len(parts) > 1 and parts[0] == "edge_sdk" else parts[0]
        return f"{area} {record.levelname.lower()}: {record.getMessage()}"


@contextmanager
def fail_on_errors() -> Iterator[None]:
    """Turn errors into one line on stderr and the documented exit code.

    User errors (:class:`EdgeSDKError`) print one line (traceback with ``-v``);
    anything else is a bug and prints its traceback (exit 1).
    """
    try:
        yield
    except typer.Exit:
        raise
    except EdgeSDKError as exc:
        if _state["verbose"]:
            traceback.print_exc()
        # soft_wrap: one line whatever the terminal width (scripts and logs read it whole)
        err_console.print(
            f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True
        )
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None
    except Exception:
        traceback.print_exc()
        err_console.print(
            "internal error: this is a bug in edge-graph-sdk; please report it with the "
            "traceback above",
            style="red",
        )
        raise typer.Exit(EXIT_INTERNAL) from None


def read_input(path: Path) -> dict[str, Any]:
    """Read a request from ``.npz`` or ``.json`` (an object of named arrays).

    Raises:
        InvalidInputError: Unreadable file or wrong format (names the file).
    """
    if not path.is_file():
        raise InvalidInputError("--input", f"file not found: {path}")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (ValueError, OSError) as exc:
            raise InvalidInputError("--input", f"{path} is not a readable .npz ({exc})") from None
    if path.suffix == ".json":
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInputError("--input", f"{path} is not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise InvalidInputError("--input", f"{path}: expected a JSON object of named arrays")
        return doc
    raise InvalidInputError("--input", f"{path}: expected a .npz or .json file")

"""The `pipenem` command. Bad input -> one message naming the field, exit status 2.

Command modules import only what their command needs when it runs, so ``--help``, ``doctor``,
``topo …``, ``containers …`` and ``list`` work without torch installed; a command that needs
an optional package says which, in one line (``pipenem.needs``).
"""

from __future__ import annotations

import errno
import logging
import sys

import typer
from rich.markup import escape

from basics.errors import ConfigError, Terminated, UnsupportedError
from basics.terminal import make_console
from pipenem.containers_cmd import containers_app
from pipenem.fidelity_cmd import fidelity_cmd
from pipenem.guest_cmd import guest_cmd
from pipenem.list_cmd import list_cmd
from pipenem.report_cmd import report_cmd
from pipenem.reproduce_cmd import reproduce_cmd
from pipenem.run_cmd import run_cmd
from pipenem.topo_cmd import doctor_cmd, topo_app
from pipenem.trace_cmd import trace_cmd
from pipenem.train_cmd import train_cmd

app = typer.Typer(
    help="pipenem: network-emulation testbed and harness for compressed pipeline-parallel training.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("doctor")(doctor_cmd)
app.command("list")(list_cmd)
app.command("fidelity")(fidelity_cmd)
app.command("train")(train_cmd)
app.command("run")(run_cmd)
app.command("report")(report_cmd)
app.command("trace")(trace_cmd)
app.command("reproduce")(reproduce_cmd)
app.command("guest", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(guest_cmd)
app.add_typer(topo_app, name="topo")
app.add_typer(containers_app, name="containers")

err_console = make_console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from basics.provenance import describe

        print(describe())
        raise typer.Exit()


@app.callback()
def _options(
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="show what the testbed and harness do: netlink/tc actions, process starts (DEBUG log on stderr)",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print pipenem's version (and git commit) and exit"
    ),
) -> None:
    if verbose:
        from rich.logging import RichHandler

        handler = RichHandler(console=err_console, show_path=False, markup=False)
        for name in ("testbed", "harness"):
            logger = logging.getLogger(name)
            logger.setLevel(logging.DEBUG)
            logger.addHandler(handler)


def _is(exc: BaseException, name: str) -> bool:
    """Whether ``exc`` is click's ``name`` exception: by class name, because typer may carry click
    inside itself (typer._click) or use the click package, depending on its version."""
    return any(cls.__name__ == name for cls in type(exc).__mro__)


def main() -> None:
    try:
        # standalone_mode=False: click returns typer.Exit's code instead of raising it
        rc = app(standalone_mode=False)
        if rc == 130:  # click turns Ctrl-C into Abort and, not standalone, returns 130 silently
            err_console.print("interrupted; everything this run created was removed")
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except (ConfigError, UnsupportedError) as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        # e.g. the results tables: written to a temporary file and renamed, so none is half-written
        err_console.print(
            f"[bold red]error:[/] no space left on the device writing {escape(str(exc.filename or '?'))}",
            soft_wrap=True,
            highlight=False,
        )
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted; everything this run created was removed")
        sys.exit(130)
    except Terminated:
        err_console.print("terminated; everything this run created was removed")
        sys.exit(143)
    except BaseException as exc:
        if _is(exc, "ClickException"):  # usage errors: click's own one-line message, exit 2
            exc.show()
            sys.exit(exc.exit_code)
        if _is(exc, "Abort"):  # Ctrl-C at a prompt
            err_console.print("interrupted; everything this run created was removed")
            sys.exit(130)
        if _is(exc, "Exit"):  # click's Exit under another name than typer.Exit
            sys.exit(getattr(exc, "exit_code", 0))
        raise


if __name__ == "__main__":
    main()

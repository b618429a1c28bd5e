"""Entry point: the Typer app, global options, command registration and the error -> exit code table."""

from __future__ import annotations

import atexit
import contextlib
import importlib
import inspect
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import typer
from typer.exceptions import TyperException

from lipsyncctl import __version__, progress
from lipsyncctl.cli.argv import hoist_global_options
from lipsyncctl.cli.progress import PROGRESS_FORMATS, LineSink, RichSink
from lipsyncctl.cli.state import CliState, emit_json, envelope, set_state, state, with_warnings
from lipsyncctl.errors import Interrupted, JobFailedError, LipsyncError, MediaError, UsageError

#: Command modules, in --help order; each has ``register(app)``. Importing them must stay cheap (no torch at
#: import). Only modules that exist are listed: a listed module that does not import is an error, never a
#: silently missing command.
COMMAND_MODULES = ("prep", "sync", "score", "curate", "train", "prune", "doctor", "models", "presets")

app = typer.Typer(
    name="lipsyncctl",
    help="Lip-sync dubbing from the command line: re-render the speaker's mouth to match a new dialogue track "
    "(LatentSync 1.5/1.6).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        if state().json:  # (a wrapper that always gives --json: one JSON document on stdout, as every command)
            emit_json({"lipsyncctl": __version__})
        else:
            typer.echo(f"lipsyncctl {__version__}")
        raise typer.Exit(0)


def _progress_format(value: str) -> str:
    if value not in PROGRESS_FORMATS:
        raise typer.BadParameter(f"'{value}' is not one of {', '.join(PROGRESS_FORMATS)}")
    return value


@app.callback()
def root(
    ctx: typer.Context,
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True,
        help="More detail on stderr: -v adds an error's underlying causes, -vv its traceback (as LIPSYNCCTL_DEBUG=1)."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bars or notes on stderr; errors only."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print the result as one JSON object on stdout, with \"ok\": true or false. "
        "Like -q and -v, it may also follow the command name (lipsyncctl doctor --json).",
    ),
    progress_format: str = typer.Option(
        "auto", "--progress", callback=_progress_format, metavar="FORMAT",
        help="How progress is shown on stderr: auto (bars on a terminal, none otherwise), lines (a line a step: "
        "'progress: denoise 120/240 (50.0%) 12.3 s, eta 12.1 s', for logs and render-farm managers), json (one "
        "object a line: event, task, done, total, percent, elapsed, eta) or off. lines and json also with -q.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Lip-sync dubbing from the command line."""
    invocation = CliState(verbose=verbose, quiet=quiet, json=json_out, argv=state().argv,
                          progress_format=progress_format)
    ctx.obj = invocation
    set_state(invocation)
    # Library progress -> Rich bars on stderr for the duration of the command (auto: off when -q or not a TTY;
    # library notes still reach stderr unless -q), or lines/JSON lines on stderr whatever it is (--progress).
    sink: RichSink | LineSink
    if progress_format in ("lines", "json"):
        sink = LineSink(sys.stderr, progress_format, show_messages=not quiet)
    else:
        sink = RichSink(invocation.stderr, enabled=progress_format == "auto" and invocation.progress_enabled,
                        show_messages=not quiet)
    ctx.with_resource(sink)
    ctx.with_resource(progress.use_sink(sink))


def register_commands(target: typer.Typer, modules: tuple[str, ...] = COMMAND_MODULES) -> None:
    """``register(target)`` of each ``lipsyncctl.cli.<name>``; a module that does not import raises."""
    for name in modules:
        importlib.import_module(f"lipsyncctl.cli.{name}").register(target)


register_commands(app)

#: Exceptions that do not come from the library, and their exit codes (as the library's own errors': lipsyncctl.errors,
#: whose ``EXIT_STATUS`` names each code).
EXIT_CODES: dict[type[BaseException], int] = {
    TyperException: UsageError.exit_code,  # click-style usage errors (their own exit_code: 2 for usage, 1 otherwise)
    typer.Abort: Interrupted.exit_code,
    KeyboardInterrupt: Interrupted.exit_code,
    FileNotFoundError: MediaError.exit_code,
    OSError: JobFailedError.exit_code,
}
USAGE = EXIT_CODES[TyperException]
INTERRUPT = EXIT_CODES[KeyboardInterrupt]
USAGE_HINT = "see `lipsyncctl --help` or `lipsyncctl COMMAND --help`"
INTERRUPT_HINT = Interrupted.default_hint
#: commands that write no file: their interrupt has nothing to resume
READ_ONLY = frozenset({"score", "doctor", "presets"})


def _interrupt_hint(command: object, args: list[str]) -> str:
    """The hint of an interrupt of the command ``args`` name (after the global options and their values)."""
    names = getattr(command, "commands", {})
    words = [a for a in map(str, args) if not a.startswith("-")]
    first = next((i for i, w in enumerate(words) if w in names), None)
    said = words[first:first + 2] if first is not None else []
    dry = "--dry-run" in args or ("-n" in args and said[:1] in (["curate"], ["prep"], ["prune"]))
    if said[:1] and (dry or said[0] in READ_ONLY or said in [["models", m] for m in ("list", "info", "path", "verify")]):
        return "nothing was written: rerun the same command"
    if said[:1] == ["sync"] and not _many_outputs(args):
        return "rerun the same command: an output not finished was not written (one already there is as it was)"
    return INTERRUPT_HINT


def _many_outputs(args: list[str]) -> bool:
    """Whether ``args`` run sync in a mode of many outputs (``--batch``, ``--timeline``/``-t``, as its flag table
    declares them: finished ones are kept and a rerun resumes), not one clip."""
    from lipsyncctl.cli.sync import FLAGS

    decls = [d for f in FLAGS if f.name in ("batch", "timeline") for d in f.decls]
    return any(a.split("=")[0] in decls or (d[:2] == a[:2] and not d.startswith("--"))
               for a in map(str, args) for d in decls)


def _emit_error(message: str, hint: str | None, code: int, partial: dict[str, Any] | None = None) -> None:
    """``error: ...`` / ``hint: ...`` on stderr; with ``--json`` also ``{"ok": false, "error": {...}}`` on
    stdout when the command printed no result, so a script always reads one JSON document (with ``partial``, an
    interrupted job's result so far, beside the error: a batch's items and counts)."""
    message = " ".join(message.split())
    from lipsyncctl.errors import report_rank_error

    if report_rank_error(message, hint, code):
        return  # a rank of `train --gpus/--nproc N`: the launching process reports it, once for the group
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    sys.stderr.flush()
    current = state()
    if current.json and not current.emitted:  # (with the warnings shown before it: a train's skipped steps)
        doc = dict(partial or {})
        if current.warned:
            listed = doc.get("warnings")
            doc = dict(with_warnings({**doc, "warnings": list(listed) if isinstance(listed, list) else []}))
        emit_json(envelope({**doc, "error": {"message": message, "hint": hint or None, "exit_code": code}}, ok=False))


def _detail(exc: BaseException, debug: bool) -> None:
    """Before an error's one line, with ``-v`` the causes under it (``cause: ...``, innermost last), with ``-vv``
    or ``LIPSYNCCTL_DEBUG=1`` the traceback."""
    verbose = state().verbose
    if debug or verbose >= 2:
        traceback.print_exception(exc)
        return
    if verbose >= 1:
        cause = exc.__cause__ or exc.__context__
        while cause is not None:
            sys.stderr.write(f"cause: {type(cause).__name__}: {' '.join(str(cause).split())}\n")
            cause = cause.__cause__ or cause.__context__


def _no_command(command: object, args: list[str]) -> bool:
    """Whether ``args`` (global options hoisted to the front) name no command, or a group without its subcommand
    (``lipsyncctl models``): Click would print the help."""
    words = [a for a in map(str, args) if not a.startswith("-")]
    if any(a in ("--help", "-h", "--version") for a in args):
        return False
    if not words:
        return True
    group = getattr(command, "commands", {}).get(words[0])
    return hasattr(group, "commands") and len(words) == 1


def _refuse_empty(args: list[str]) -> None:
    """An empty argument (``-o ""``, ``--audio=``: a script's unset variable) is a usage error naming its option:
    as a path it read as the current folder (``prep "" -o X`` took every file there, ``sync -o ""`` failed
    inside)."""
    from lipsyncctl.errors import UsageError

    for i, arg in enumerate(map(str, args)):  # (callers of main() may pass paths)
        name, eq, value = arg.partition("=")
        if arg == "" or (eq and name.startswith("--") and value == ""):
            before = str(args[i - 1]) if i else ""
            where = name if eq else (before if before.startswith("-") else f"argument {i + 1}")
            raise UsageError(f"{where}: an empty value", hint="a variable of the script calling lipsyncctl may be unset")


def _json_requested(args: list[str]) -> bool:
    """``--json`` among the global options (hoisted to the front), for errors raised before the root
    callback has parsed them."""
    for arg in args:
        if not arg.startswith("-"):
            return False
        if arg == "--json":
            return True
    return False


def _terminated(signum: int, frame: object) -> None:
    from lipsyncctl import progress

    progress.interrupted(True)  # the tasks it ends are stopped, those closed while it unwinds too
    raise KeyboardInterrupt  # SIGTERM (kill, timeout, a scheduler's time limit) cleans up like Ctrl-C


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM raises KeyboardInterrupt in the main thread, so temporary files
    and folders are removed as on Ctrl-C (the default action killed the process and left them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from lipsyncctl import progress

    progress.interrupted(False)
    previous = signal.signal(signal.SIGTERM, _terminated)
    interrupt = signal.getsignal(signal.SIGINT)
    if interrupt is signal.default_int_handler:  # (not where the caller ignores Ctrl-C or handles it)
        signal.signal(signal.SIGINT, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if interrupt is signal.default_int_handler:
            signal.signal(signal.SIGINT, interrupt)
        progress.interrupted(False)


def main(argv: list[str] | None = None, *, interrupted: bool = False) -> int:
    """Run the CLI and return the exit code (never raises, except SystemExit from Typer internals).
    Ctrl-C and SIGTERM both end it with 130 after removing partial outputs. ``interrupted``: one came while the CLI
    was being imported (:func:`lipsyncctl.__main__.entry`): reported as such, nothing run."""
    with _sigterm_as_interrupt():
        try:
            return _main(argv, interrupted)
        except KeyboardInterrupt:  # (before the command was built, its imports: a traceback and no JSON before)
            args = sys.argv[1:] if argv is None else list(argv)
            set_state(CliState(json=_json_requested(args), argv=tuple(args)))
            _emit_error("interrupted", "nothing had started: rerun the same command", INTERRUPT)
            return INTERRUPT


def _main(argv: list[str] | None, interrupted: bool = False) -> int:
    if sys.stderr is None:  # started with `2>&-`: notes and errors go nowhere, as with 2>/dev/null
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process
    if sys.stdout is None:  # started with `>&-`: nowhere to put the result
        sys.stderr.write("error: standard output is closed\nhint: redirect it instead: > FILE or > /dev/null\n")
        return 2
    # (a reader that stops early, `| head`: Click and Rich stop writing and exit 1 silently; README's table)
    return _run(argv, interrupted)


def reflow(text: str) -> str:
    """A help text with each prose paragraph on one line, so that the terminal wraps it at its own width (Typer
    keeps the source's line breaks: at 80 columns every line broke in two). A paragraph with an indented line
    (examples, a table) keeps its breaks and its ``\\b``; a prose paragraph loses both."""
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.split("\n")
        body = lines[1:] if lines[0] == "\b" else lines
        if any(line[:1].isspace() for line in body):
            paragraphs.append(paragraph)
        else:
            paragraphs.append(" ".join(line.strip() for line in body))
    return "\n\n".join(paragraphs)


def _reflowed(command: object) -> object:
    """``command`` and its subcommands with :func:`reflow`'d help texts."""
    if getattr(command, "help", None):
        command.help = reflow(command.help)  # type: ignore[attr-defined]
    for sub in getattr(command, "commands", {}).values():
        _reflowed(sub)
    return command


#: The width help is drawn at when it goes to a pipe or a file (`--help | grep`) and no width is asked for: Rich's 80
#: columns cut the options' help with an ellipsis where a long word (a config key: `(inference.steps=N)`) did not fit.
PIPED_HELP_WIDTH = 120


def _run(argv: list[str] | None, interrupted: bool = False) -> int:
    from typer import rich_utils  # (not `import typer.rich_utils`: that would make `typer` a local name here)

    width = rich_utils.MAX_WIDTH  # Typer's, from TERMINAL_WIDTH when set: put back after this invocation (in-process
    if not os.environ.get("COLUMNS") and not os.environ.get("TERMINAL_WIDTH") and not sys.stdout.isatty():  # callers)
        rich_utils.MAX_WIDTH = PIPED_HELP_WIDTH
    try:
        return _invoke(argv, interrupted)
    finally:
        rich_utils.MAX_WIDTH = width


def _invoke(argv: list[str] | None, interrupted: bool = False) -> int:
    debug = os.environ.get("LIPSYNCCTL_DEBUG") == "1"
    command = _reflowed(typer.main.get_command(app))
    args = hoist_global_options(command, sys.argv[1:] if argv is None else list(argv))
    # A fresh state per invocation (the root callback replaces it once the global options are parsed).
    set_state(CliState(json=_json_requested(args), argv=tuple(args)))
    try:
        if interrupted:
            raise KeyboardInterrupt
        _refuse_empty(args)
        if state().json and _no_command(command, args):  # stdout stays one JSON document, not the help
            _emit_error("no command given", USAGE_HINT, USAGE)
            return USAGE
        rv = command.main(args=args, prog_name="lipsyncctl", standalone_mode=False)
        code = int(rv) if isinstance(rv, int) else 0
        if code == INTERRUPT:  # Typer turns Ctrl-C into Exit(130) itself; say so like every other error
            _emit_error("interrupted", _interrupt_hint(command, args), code)
        return code
    except typer.Exit as exc:
        return exc.exit_code
    except LipsyncError as exc:
        _detail(exc, debug)
        _emit_error(str(exc), exc.hint, exc.exit_code, getattr(exc, "partial", None))
        return exc.exit_code
    except TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `lipsyncctl` or a group without a subcommand
            sys.stdout.write(exc.format_message() + "\n")
            return USAGE
        # usage errors: "No such option", "Missing argument", ...
        code = getattr(exc, "exit_code", USAGE)
        _emit_error(exc.format_message(), USAGE_HINT, code)
        return code
    except (typer.Abort, KeyboardInterrupt):
        _emit_error("interrupted", _interrupt_hint(command, args), INTERRUPT)
        return INTERRUPT
    except OSError as exc:
        _detail(exc, debug)
        code = next(c for t, c in EXIT_CODES.items() if isinstance(exc, t))
        _emit_error(
            f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
            "check the path and permissions",
            code,
        )
        return code
    except Exception as exc:  # noqa: BLE001 - last-resort boundary: one line instead of a traceback
        _detail(exc, debug)
        _emit_error(
            f"internal error: {type(exc).__name__}: {exc}",
            "rerun with LIPSYNCCTL_DEBUG=1 and report the traceback",
            1,
        )
        return 1


def _exit_on_sigterm(code: int) -> None:
    """Once the command is done and its result printed, a SIGTERM or SIGINT (a scheduler's late stop, a Ctrl-C)
    ends the process with the command's own exit code: the default action killed it during the interpreter's
    teardown (exit 143, or 130 with no error line) while stdout already said ``"ok": true``. While Python still runs
    its teardown a handler exits with the code; after the last exit hook (:func:`_ignore_late_signals`), when Python
    puts the default actions back, the signals are ignored for the last moments of the exit."""
    def done(signum: int, frame: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    if threading.current_thread() is threading.main_thread():
        _finished["code"] = code
        signal.signal(signal.SIGTERM, done)
        signal.signal(signal.SIGINT, done)


#: the exit code of a command that has finished (None while it runs): :func:`_ignore_late_signals` reads it
_finished: dict[str, int | None] = {"code": None}


def _ignore_late_signals() -> None:
    """An exit hook of a finished command, registered when the CLI is imported (before the libraries a command loads,
    so it runs after their hooks: torch's, multiprocessing's): SIGTERM and SIGINT ignored from here to the exit
    (Python resets its own handlers to the default actions after the exit hooks, not an ignored signal)."""
    if _finished["code"] is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


atexit.register(_ignore_late_signals)


def run(*, interrupted: bool = False) -> None:
    """The CLI as a process (:func:`lipsyncctl.__main__.entry` starts it), ending with the command's exit code, a late
    signal included (:func:`_exit_on_sigterm`). ``interrupted``: see :func:`main`."""
    code = main(interrupted=interrupted)
    _exit_on_sigterm(code)
    sys.exit(code)

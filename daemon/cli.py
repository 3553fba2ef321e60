"""The `facewatch` command. Subcommands of other packages (e.g. `train`) join through the
`facewatch.commands` entry point group, so this module never imports them."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence
from importlib.metadata import entry_points
from types import TracebackType

from daemon import (
    archive_cli,
    build_version,
    detect_cli,
    engines_cli,
    enroll_cli,
    identify_cli,
    run_cli,
    status_cli,
)
from daemon.journal import GuardedStdout, StdoutError, print_error, stderr_is_journal

logger = logging.getLogger(__name__)
LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
EPILOG = (
    "Exit status, every command: 0 done; 1 an input, the gallery or the output refused (a "
    "photo or video that cannot be read, a person not enrolled, a full disk under stdout: "
    "each said on stderr with its name, after `error:`), `run` stopped by a failure (a port "
    "taken, a full disk), or `status`: the daemon reports problems; 2 a usage, "
    "configuration or model problem (the train commands give 2 for any problem, their "
    "inputs' too); 3 `status` only: no daemon "
    "answers; 130 stopped by Ctrl-C (what was done is kept, and where it stopped said; `run` "
    "stops cleanly, 0); 141 "
    "the reader of stdout went away (`| head`). Environment: FACEWATCH_CONFIG the daemon's "
    "config that `run`, `status`, `archive list` and `validate-config` read (else "
    "/etc/facewatch/facewatch.yaml, else the demo's; `validate-config` asks for a file then); FACEWATCH_GALLERY the gallery of enroll, identify and gallery (else "
    "$XDG_DATA_HOME/facewatch/gallery.sqlite, ~/.local/share/...); FACEWATCH_MODELS the "
    "models folder (else the shipped models/); FACEWATCH_ENGINE_CACHE the TensorRT plans "
    "(else ~/.cache/facewatch/engines)."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facewatch",
        description="Real-time face detection and recognition for IP cameras: MTCNN + FaceNet on "
        "the CPU (OpenVINO, ONNX Runtime) or an NVIDIA GPU (TensorRT, PyTorch CUDA).",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"facewatch {build_version()}")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=LEVELS,
        help="log verbosity on stderr, before or after the command (default: WARNING; INFO "
        "for `train`, whose per-epoch figures are INFO lines; `run` takes its config's "
        "logging.level, INFO by default, unless this is given)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    detect_cli.register(commands)
    enroll_cli.register(commands)
    identify_cli.register(commands)
    engines_cli.register(commands)
    run_cli.register(commands)
    archive_cli.register(commands)
    status_cli.register(commands)
    for entry in entry_points(group="facewatch.commands"):
        try:
            entry.load()(commands)
        except ImportError as exc:
            logger.debug("command group %s unavailable: %s", entry.name, exc)
    for command in commands.choices.values():  # `facewatch run --log-level DEBUG` too
        command.add_argument(
            "--log-level",
            default=argparse.SUPPRESS,
            choices=LEVELS,
            help="log verbosity on stderr (the same as `facewatch --log-level LEVEL COMMAND`)",
        )
    _describe(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """Each subcommand without a description of its own gets its one-line help as one, so
    that its --help says what it does."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if sub.description is None and helps.get(name):
                    sub.description = str(helps[name]).replace("%%", "%")
                _describe(sub)


def log_formatter() -> logging.Formatter:
    """Log lines with the time, except where they go to systemd's journal (``JOURNAL_STREAM``
    names stderr), which stamps each line itself and takes its priority from a ``<N>``
    prefix (``journalctl -p warning`` finds the warnings and errors; without it, every line
    was of priority info)."""
    line = "%(levelname)s %(name)s: %(message)s"
    if stderr_is_journal():
        return _JournalFormatter(line)
    return logging.Formatter("%(asctime)s " + line, "%Y-%m-%d %H:%M:%S")


class _JournalFormatter(logging.Formatter):
    """Every line of a record (a traceback's too) with its syslog priority, ``<3>`` for an
    error: journald's ``SyslogLevelPrefix`` (on by default) files it so and drops the
    prefix."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _syslog_priority(record.levelno)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).split("\n"))


def _syslog_priority(level: int) -> int:
    """syslog's priority of a logging level: crit 2, err 3, warning 4, info 6, debug 7."""
    levels = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
    for floor, priority in levels:
        if level >= floor:
            return priority
    return 7


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = args.log_level or ("INFO" if args.command == "train" else "WARNING")
    handler = logging.StreamHandler()
    handler.setFormatter(log_formatter())
    logging.basicConfig(level=level, handlers=[handler])
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    stdout = sys.stdout
    if stdout is not None:  # (None: started with stdout closed, `>&-`: print writes nothing)
        sys.stdout = GuardedStdout(stdout)
    try:
        return int(args.func(args) or 0)
    except StdoutError as exc:  # a full disk under `> FILE`: the output's fault, no input's
        print_error(f"cannot write to stdout: {exc.strerror or exc}")
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`facewatch ... | head`): stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        # a file or folder the command could not use: its name and the reason, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print_error(f"{where}{exc.strerror or exc}")
        logger.debug("details", exc_info=True)
        return 1
    finally:
        sys.stdout = stdout


def _log_uncaught(
    kind: type[BaseException], exc: BaseException, traceback: TracebackType | None
) -> None:
    """A bug's traceback through the log handler: in the journal every line of it is filed
    as critical (Python's own hook printed it at priority info)."""
    if issubclass(kind, KeyboardInterrupt):  # Ctrl-C outside a command: no error
        sys.__excepthook__(kind, exc, traceback)
        return
    logger.critical("facewatch stopped by an unexpected error", exc_info=(kind, exc, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    logger.critical(
        "%s stopped by an unexpected error",
        name,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )


if __name__ == "__main__":
    sys.exit(main())

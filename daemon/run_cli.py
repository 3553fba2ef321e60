"""``facewatch run`` (the daemon) and ``facewatch validate-config``."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import getpass
import logging
import os
import sys
from typing import Any, NoReturn

from daemon.cli_args import number
from daemon.config import CHOSEN_CONFIG, DEFAULT_CONFIG, SERVICE_CONFIG, ConfigError, config_choice
from daemon.config_file import load_config
from daemon.config_listing import schema_lines
from daemon.journal import print_error

logger = logging.getLogger(__name__)


def register(commands: Any) -> None:
    _register_run(commands)
    _register_validate(commands)


def _register_run(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run the daemon: cameras in, identity events to MQTT, metrics to Prometheus",
        description=(
            "Read every configured camera, detect and recognise faces in batches across all "
            "cameras, track them, and publish identity events to MQTT (spooled on disk while "
            "the broker is away) and metrics to Prometheus. With no --config, runs the config "
            f"$FACEWATCH_CONFIG names, else {SERVICE_CONFIG} when there is one, else the demo "
            f"configuration {DEFAULT_CONFIG} (the log says which, and why). SIGTERM stops "
            "cleanly; the gallery is re-read when its file changes (within 2 s) or at SIGHUP."
        ),
    )
    run.add_argument(
        "--config",
        "-c",
        help=f"YAML file (default: {CHOSEN_CONFIG})",
    )
    run.add_argument(
        "--run-for",
        type=number(float, gt=0),
        metavar="SECONDS",
        help="stop cleanly after this many seconds (default: run until SIGTERM / Ctrl-C)",
    )
    run.set_defaults(func=_run)


def _register_validate(commands: Any) -> None:
    check = commands.add_parser(
        "validate-config",
        help="check a daemon configuration file and exit (non-zero when invalid)",
        description="Validate a YAML configuration: unknown keys, types, bounds, ${ENV} and "
        "credential references; then what `run` checks before it starts: local video files "
        "decode, the model files are there, TLS files can be read, the spool, archive and "
        "events file can be written. Every problem is reported with its key path (exit 2).",
    )
    check.add_argument(
        "file",
        nargs="?",
        help=f"the YAML file to check (default: $FACEWATCH_CONFIG, else {SERVICE_CONFIG} when "
        "there is one)",
    )
    check.add_argument(
        "--schema",
        action="store_true",
        help="list every setting with its default and meaning (and check no file: it takes none)",
    )
    check.add_argument(
        "--settings-only",
        action="store_true",
        help="check the settings alone, away from the machine the file is for (e.g. in a "
        "repository's CI): ${NAME} and ${credential:NAME} stay unresolved, files and folders "
        "are not looked at",
    )
    check.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    if args.schema:
        if args.file is not None:  # a CI step would pass whatever the file holds
            print_error(
                f"--schema lists the settings and checks no file: run `facewatch "
                f"validate-config {args.file}` to check {args.file}"
            )
            return 2
        print("\n".join(schema_lines()))
        return 0
    if args.file is None:
        chosen, _ = config_choice()
        if chosen == DEFAULT_CONFIG and not os.environ.get("FACEWATCH_CONFIG"):
            print_error(
                "give the configuration file to check (or set $FACEWATCH_CONFIG; or --schema)"
            )
            return 2
        args.file = str(chosen)
    from daemon.preflight import (  # (OpenCV: slow)
        mtcnn_load_problems,
        problems,
        recognition_summary,
    )
    from daemon.preflight_warnings import warnings

    try:
        config = load_config(args.file, secrets=not args.settings_only)
    except ConfigError as exc:
        print_error(str(exc))
        return 2
    found = [] if args.settings_only else [*problems(config), *mtcnn_load_problems(config)]
    if found:
        print_error(
            f"{args.file}: valid settings, but `run` (as {getpass.getuser()}) would "
            "stop at once:\n  " + "\n  ".join(found)
        )
        return 2
    for warning in warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    enabled = sum(c.enabled for c in config.cameras)
    what = "settings valid (files not checked)" if args.settings_only else "valid"
    model = "" if args.settings_only else f"; {recognition_summary(config)}"
    print(f"{args.file}: {what} ({enabled} of {len(config.cameras)} cameras enabled{model})")
    return 0


def _run(args: argparse.Namespace) -> int:
    from daemon.run_state import RunState
    from daemon.service import Service  # engines and MQTT: the daemon's alone
    from daemon.service_start import StartFailed

    _dump_stacks_on_abort()

    why = ""
    if args.config is None:  # (a container's $FACEWATCH_CONFIG ran the demo: said now)
        chosen, why = config_choice()
        args.config = str(chosen)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print_error(f"{exc}\n{args.config} is {why}" if why else str(exc))
        return 2
    if args.log_level is None:  # --log-level, when given, wins over logging.level
        logging.getLogger().setLevel(config.logging.level)
    if why:
        demo = args.config == str(DEFAULT_CONFIG)
        said = logger.warning if demo else logger.info
        said("config %s: %s", args.config, why)
    service = Service(config, run_for_s=args.run_for, config_path=args.config)
    # for FacewatchRestarting: did the run before stop cleanly?
    with contextlib.closing(RunState.start()) as run:
        try:
            code = service.run()
        except ConfigError as exc:
            print_error(f"{args.config}: {exc}")
            code = 2
        except (OSError, StartFailed) as exc:  # (exit 1: systemd retries; 2 it does not)
            print_error(str(exc))
            code = 1
        if code == 0:
            run.stopped_cleanly()
        if service.left_behind:
            _exit_now(code, service.left_behind)
        return code


def _exit_now(code: int, threads: list[str]) -> NoReturn:
    """End the process with ``code`` at once, without Python's clean-up at exit, once a stop
    had to leave ``threads`` running. One in a call of OpenCV (a camera's open that hangs)
    or of an engine whose call returns during that clean-up is ended by unwinding through
    C++ code, which aborts the process: systemd recorded `systemctl stop` as a crash
    (status=6/ABRT, a core dump, the unit failed). What the clean-up would do that matters
    is done here: the log and standard output flushed (the spool and files are closed)."""
    logger.debug("ending without Python's clean-up: %s still running", ", ".join(threads))
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):  # closed, or none
            stream.flush()
    os._exit(code)


def _dump_stacks_on_abort() -> None:
    """Every thread's stack on stderr (the journal) when systemd's watchdog aborts a hung
    daemon (SIGABRT) or it crashes in native code: which engine call or reader hung."""
    try:
        faulthandler.enable(all_threads=True)
    except (OSError, ValueError, AttributeError, RuntimeError):  # no real stderr
        logger.debug("no stack dump on a crash: stderr has no file descriptor")

"""Reading the daemon's configuration file: strict YAML (a key given twice is an error),
``${NAME}`` replaced by the environment variable NAME and ``${credential:NAME}`` by the
systemd credential NAME (``$CREDENTIALS_DIRECTORY/NAME``), so secrets stay out of the file;
validation against ``daemon.config``'s schema with every error naming its key path (the
messages: daemon/config_errors.py); paths relative to the file's folder. A secret it reads is
remembered, to be masked wherever it shows (daemon/redaction.py).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from daemon.config import Config, ConfigError
from daemon.config_errors import explain, key_path
from daemon.redaction import redact_url, remember_secret, url_passwords

_REFERENCE = re.compile(r"\$\{(credential:)?([A-Za-z_][A-Za-z0-9_.-]*)\}")
_ANY_REFERENCE = re.compile(r"\$\{[^}]*\}")
# an IPv6 address unquoted, where YAML stops: `address: ::`, `host: fd00::`, `host: [::1]`
_BARE_IPV6 = re.compile(r":\s+\[?[0-9A-Fa-f.]*::")


def _substitute(value: Any, where: str, missing: list[tuple[str, str]], secrets: bool) -> Any:
    """Replace ``${ENV}`` and ``${credential:NAME}`` in every string of ``value``. A reference
    that cannot be resolved stays as it is, and (key path, reason) joins ``missing`` (with
    ``secrets`` off, it stays silently); so does one that is no reference (``${credential:}``)."""
    if isinstance(value, dict):
        return {
            k: _substitute(v, f"{where}.{k}" if where else str(k), missing, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, _item(where, i, v), missing, secrets) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    for written in _ANY_REFERENCE.findall(value):
        if not _REFERENCE.fullmatch(written):
            missing.append(
                (where, f"{where}: {written} is no reference: write ${{NAME}} (an environment "
                 "variable: letters, digits, _ . -) or ${credential:NAME}")
            )  # fmt: skip
    return _REFERENCE.sub(lambda match: _referenced(match, where, missing, secrets), value)


def _referenced(
    match: re.Match[str], where: str, missing: list[tuple[str, str]], secrets: bool
) -> str:
    """What the reference ``match`` (at key path ``where``) stands for: the credential or
    the environment variable it names; when there is none, the reference as written, and
    with ``secrets`` on (key path, reason) joins ``missing``."""
    name = match.group(2)
    try:
        if match.group(1):
            return _credential(name, where)
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name} is not set")
    except ConfigError as exc:
        if secrets:
            missing.append((where, str(exc)))
        return match.group(0)
    return os.environ[name]


def _item(where: str, index: int, value: Any) -> str:
    """A list item's key path, with its name as validation errors give it: cameras[0] (door)."""
    name = value.get("name") if isinstance(value, dict) else None
    return f"{where}[{index}]" + (f" ({name})" if isinstance(name, str) else "")


def _credential(name: str, where: str) -> str:
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        raise ConfigError(
            f"{where}: credential {name!r} asked for, but CREDENTIALS_DIRECTORY is not set "
            "(give it with LoadCredential= in the systemd unit, or "
            "CREDENTIALS_DIRECTORY=/run/secrets for a container's secrets)"
        )
    path = Path(folder) / name
    try:
        value = path.read_text().rstrip("\n")
    except OSError as exc:
        raise ConfigError(f"{where}: credential {name!r}: cannot read {path}: {exc}") from exc
    if not value:
        raise ConfigError(f"{where}: credential {name!r}: {path} is empty")
    remember_secret(value)  # whatever it is used for: a credential is a secret
    return value


def url_host(host: str) -> str:
    """``host`` as it goes into a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def parse_config(raw: Any, source: str = "config", secrets: bool = True) -> Config:
    """A validated Config from parsed YAML; ConfigError names every bad key path. With
    ``secrets`` off, ``${...}`` references that cannot be resolved stay as they are (for
    commands that use no camera or broker, e.g. `engines build --config`)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
    problem = _unwieldy(raw)
    if problem is not None:
        raise ConfigError(f"{source}: invalid configuration\n  {problem}")
    missing: list[tuple[str, str]] = []
    raw = _substitute(raw, "", missing, secrets)
    _remember_secrets(raw)
    lines = [reason for _, reason in missing]  # every one of them, not only the first
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        unresolved = {where for where, _ in missing}  # their keys' other errors are noise
        for error in exc.errors():
            key = key_path(error["loc"], raw)
            if key not in unresolved:  # (a name or a message may quote a URL: masked)
                lines.append(redact_url(f"{key}: {explain(dict(error))}"))
    if lines:
        raise ConfigError(f"{source}: invalid configuration\n  " + "\n  ".join(lines))
    return config


MAX_VALUES = 100_000  # in a config file once its YAML aliases are expanded
MAX_DEPTH = 32


def _unwieldy(raw: Any) -> str | None:
    """Why a config cannot be taken whatever its keys say: YAML aliases of aliases that
    expand to millions of values, an alias inside its own anchor (endless), a NUL character
    (no path may hold one); None when it is none of that."""
    stack: list[tuple[Any, str, int]] = [(raw, "", 0)]
    count = 0
    while stack:
        value, where, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return f"more than {MAX_VALUES} values (YAML aliases of aliases?)"
        if depth > MAX_DEPTH:
            shown = where if len(where) < 60 else f"{where[:60]}…"
            return f"{shown}: nested over {MAX_DEPTH} levels deep (an alias inside its anchor?)"
        if isinstance(value, str) and "\0" in value:
            return f"{where}: holds a NUL character (\\0)"
        if isinstance(value, dict):
            children = [(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()]
        else:
            children = (
                [(v, f"{where}[{i}]") for i, v in enumerate(value)]
                if isinstance(value, list)
                else []
            )
        stack += [(child, path, depth + 1) for child, path in children]
    return None


def _remember_secrets(raw: dict[str, Any]) -> None:
    """The cameras' URL passwords and the broker's, before anything can show them."""
    cameras = raw.get("cameras")
    for camera in cameras if isinstance(cameras, list) else []:
        url = camera.get("url") if isinstance(camera, dict) else None
        for password in url_passwords(url) if isinstance(url, str) else ():
            remember_secret(password)
    mqtt = raw.get("mqtt")
    if isinstance(mqtt, dict) and isinstance(mqtt.get("password"), str):
        remember_secret(mqtt["password"])


def load_config(path: str | Path, secrets: bool = True) -> Config:
    """Read, substitute and validate a YAML file; relative paths in it are made relative to
    the file's folder. ``secrets``: as ``parse_config``."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")  # whatever the locale says
        stream = io.StringIO(text)
        stream.name = str(path)  # YAML's messages then name the file
        raw = yaml.load(stream, _StrictLoader)  # a SafeLoader
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}{_ipv6_hint(exc, text)}") from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit number; lists 1000 deep
        why = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
        raise ConfigError(f"{path}: cannot be read: {why}") from None
    return resolve_paths(parse_config(raw, str(path), secrets), path.resolve().parent)


def _ipv6_hint(exc: yaml.YAMLError, text: str) -> str:
    """How to write an IPv6 address, when the line YAML stopped at holds one unquoted."""
    mark = getattr(exc, "problem_mark", None)
    lines = text.splitlines()
    line = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
    if not _BARE_IPV6.search(line):
        return ""
    return '\n(write an IPv6 address in quotes: address: "::", host: "fd00::10")'


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (YAML keeps the last one,
    silently: a second `metrics:` block would replace the first)."""


def _mapping_once(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: YAML's own business
            continue
        try:
            key = loader.construct_object(key_node)
            twice = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key (a set is found in a set, but not added)
            continue
        if twice:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"{key!r} is given twice",
                key_node.start_mark,
            )  # fmt: skip
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_once)


def _resolve(base: Path, value: str) -> str:
    if "://" in value or value.startswith("/dev/"):
        return value
    return str((base / os.path.expanduser(value)).resolve())


def _absolute(base: Path, value: str) -> str:
    """``value`` relative to ``base``, its symlinks kept: a file renewed by re-pointing a
    link (certbot's live/ to archive/, cert-manager's ..data) is read through the link,
    where ``_resolve`` would keep reading the target it had at the start."""
    return str(base / os.path.expanduser(value))


def resolve_paths(config: Config, base: Path) -> Config:
    """Paths in the config are relative to ``base`` (the config file's folder). The TLS
    files keep their symlinks (they are read again when renewed: ``daemon.mqtt_tls``); the
    other paths are resolved, as they always were."""
    model = config.recognition.model
    if model not in (None, "auto"):
        model = _resolve(base, model)
    cameras = [c.model_copy(update={"url": _resolve(base, c.url)}) for c in config.cameras]
    recognition = config.recognition.model_copy(
        update={"model": model, "gallery": _resolve(base, config.recognition.gallery)}
    )
    mqtt = config.mqtt.model_copy(update={"spool_dir": _resolve(base, config.mqtt.spool_dir)})
    if mqtt.tls is not None:  # (the unit's working folder is /var/lib/facewatch, not /etc's)
        files = {key: getattr(mqtt.tls, key) for key in ("ca_file", "cert_file", "key_file")}
        resolved = {key: _absolute(base, path) for key, path in files.items() if path}
        mqtt = mqtt.model_copy(update={"tls": mqtt.tls.model_copy(update=resolved)})
    tensorrt = config.engines.tensorrt
    if tensorrt.calib_dir:
        tensorrt = tensorrt.model_copy(update={"calib_dir": _resolve(base, tensorrt.calib_dir)})
    engines = config.engines.model_copy(
        update={"mtcnn_dir": _resolve(base, config.engines.mtcnn_dir), "tensorrt": tensorrt}
    )
    events = config.events
    if events.jsonl_file:
        events = events.model_copy(update={"jsonl_file": _resolve(base, events.jsonl_file)})
    archive = config.archive
    if archive.dir:
        archive = archive.model_copy(update={"dir": _resolve(base, archive.dir)})
    return config.model_copy(
        update={
            "cameras": cameras,
            "recognition": recognition,
            "mqtt": mqtt,
            "engines": engines,
            "events": events,
            "archive": archive,
        }
    )

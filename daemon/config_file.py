"""Reading the daemon's configuration file: strict YAML (a key given twice is an error),
``${NAME}`` replaced by the environment variable NAME and ``${credential:NAME}`` by the
systemd credential NAME (``$CREDENTIALS_DIRECTORY/NAME``), so secrets stay out of the file;
validation against ``daemon.config``'s schema with every error naming its key path; paths
relative to the file's folder; and the one-line-per-setting listing of ``--schema``.
"""

from __future__ import annotations

import difflib
import io
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import unquote

import yaml
from pydantic import BaseModel, ValidationError

from daemon.config import Config, ConfigError
from daemon.config_cameras import CameraConfig
from daemon.config_section import Section

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


def _key_path(loc: tuple[int | str, ...], raw: Any) -> str:
    """``('cameras', 1, 'fps')`` -> ``cameras[1] (door).fps``."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            if parts:
                parts[-1] = f"{parts[-1]}[{item}]"
            else:  # a number as a top-level key
                parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                parts[-1] += f" ({node['name']})"
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


# user:password@ to the last @ of the URL (a password holding / or @ written as is must not
# show in part), and the values of query parameters that carry secrets (?user=x&password=y)
_URL_PASSWORD = re.compile(r"(?<=://)([^/@:\s'\"]*):[^\s'\"]*@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:password|passwd|pass|pwd|pw|psw|loginpas|passcode|token|access_token|api_key"
    r"|apikey|key|secret|auth|sig|signature)=)[^&;#\s'\"]*"
)
# The config's own passwords (camera URLs', the broker's, ${credential:...} values), masked
# wherever they show: in free text a password holding a quote or a space cannot be told from
# what follows it. Shorter ones are left to the patterns (they would mask common words).
_KNOWN_SECRETS: set[str] = set()
MIN_SECRET_CHARS = 4


def remember_secret(value: str) -> None:
    """Mask ``value`` (and its percent-decoded form) in everything ``redact_url`` shows."""
    for form in (value, unquote(value)):
        if len(form) >= MIN_SECRET_CHARS:
            _KNOWN_SECRETS.add(form)


def url_passwords(url: str) -> set[str]:
    """The password of a URL given alone, both ways it may be read: to the URL's last '@'
    (a password holding / or @ written as is), and to the first '@' before the path (an
    @ in the path or the query)."""
    found = set()
    rest = url.partition("://")[2]
    for userinfo in (rest.rpartition("@")[0], rest.split("/", 1)[0].rpartition("@")[0]):
        if ":" in userinfo:
            found.add(userinfo.partition(":")[2])
    return found - {""}


def url_host(host: str) -> str:
    """``host`` as it goes into a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def redact_url(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it masked, and
    the values of secret-looking query parameters (``password=``, ``pwd=``, ``token=``...)."""
    for secret in sorted(_KNOWN_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _QUERY_SECRET.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))


def _explain(error: dict[str, Any]) -> str:
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        if loc[0] != "cameras" and str(loc[-1]) in _keys_beside(loc, CameraConfig):
            where = ".".join(str(part) for part in loc)
            return f"unknown key here: it is set per camera, as cameras[].{where}"
        close = difflib.get_close_matches(str(loc[-1]), _keys_beside(loc), n=1)
        return "unknown key" + (f" (did you mean {close[0]}?)" if close else "")
    if kind == "missing":
        if loc and isinstance(loc[-1], int):  # an item of a fixed-length list
            return f"too few values: the list needs {loc[-1] + 1} or more"
        return "required key is missing"
    if kind in ("too_short", "too_long"):
        limit = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        bound = "at least" if kind == "too_short" else "at most"
        return f"expected {bound} {limit} item(s), got {ctx.get('actual_length')}"
    got = error.get("input")
    secret = any("password" in str(part) for part in error["loc"])
    written = repr(redact_url(got)) if isinstance(got, str) else redact_url(repr(got))
    shown = "" if secret or isinstance(got, (dict, list)) else f" (got {written})"
    message = str(error["msg"]).removeprefix("Value error, ")  # pydantic's, for our checks
    if kind in ("list_type", "tuple_type"):
        message = "expected a list of values ([a, b, ...])"
    if error["type"] == "model_type":  # "...or instance of MotionConfig": a class's name
        message = "expected a section of settings (key: value lines under it)"
        if error["loc"] and error["loc"][-1] == "motion":
            message += ", or true / false"
    return f"{message}{shown}"


def _keys_beside(loc: tuple[int | str, ...], root: type[Section] = Config) -> list[str]:
    """The keys of the section that holds ``loc``'s last key (for "did you mean"), with
    ``loc`` read from ``root``."""
    section: type[Section] | None = root
    for item in loc[:-1]:
        if isinstance(item, int):
            continue
        field = section.model_fields.get(item) if section is not None else None
        section = _section_in(field.annotation) if field is not None else None
    return list(section.model_fields) if section is not None else []


def _section_in(annotation: Any) -> type[Section] | None:
    """The Section class a field holds (directly, in a list, or optional), if any."""
    # get_origin: Python 3.10 calls list[CameraConfig] a type, and issubclass then raises
    if isinstance(annotation, type) and get_origin(annotation) is None:
        return annotation if issubclass(annotation, Section) else None
    for inner in get_args(annotation):
        found = _section_in(inner)
        if found is not None:
            return found
    return None


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
            key = _key_path(error["loc"], raw)
            if key not in unresolved:  # (a name or a message may quote a URL: masked)
                lines.append(redact_url(f"{key}: {_explain(dict(error))}"))
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


def config_changes(old: Config, new: Config) -> list[str]:
    """The key paths whose values differ from ``old`` to ``new`` (``mqtt.host``,
    ``cameras[door].fps``, ``cameras[yard] (added)``), never the values (a password)."""
    before, after = old.model_dump(), new.model_dump()
    changed = _changes(
        {k: v for k, v in before.items() if k != "cameras"},
        {k: v for k, v in after.items() if k != "cameras"},
        "",
    )
    cameras = {c["name"]: c for c in before["cameras"]}
    for camera in after["cameras"]:
        name = camera["name"]
        if name in cameras:
            changed += _changes(cameras.pop(name), camera, f"cameras[{name}]")
        else:
            changed.append(f"cameras[{name}] (added)")
    return changed + [f"cameras[{name}] (removed)" for name in cameras]


def _changes(old: Any, new: Any, where: str) -> list[str]:
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [where]
    keys = [*old, *(k for k in new if k not in old)]
    return [
        path for key in keys for path in _changes(old.get(key), new.get(key), _dotted(where, key))
    ]


def _dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def schema_lines(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """One line per setting: key path, default and description (for --schema)."""
    lines = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section_in(info.annotation)
        if section is not None:
            lines.append(f"{key}: {info.description}")
            item = "[]." if name == "cameras" else "."
            lines += schema_lines(section, key + item)
            continue
        default = "required" if info.is_required() else f"default {_yaml(info.default)}"
        lines.append(f"{key} ({default}{_allowed(info)}): {info.description}")
    return lines


def _yaml(value: Any) -> str:
    """A default as it is written in the YAML file (null, true, [0.6, 0.7, 0.7])."""
    if isinstance(value, tuple):
        value = list(value)
    return (
        yaml.safe_dump(value, default_flow_style=True, width=1000)
        .strip()
        .removesuffix("...")
        .strip()
    )


def _allowed(info: Any) -> str:
    """'; one of a, b' for a choice, '; >= 1, <= 60' for a bounded number."""
    choices = [
        a for a in getattr(info.annotation, "__args__", ()) if isinstance(a, str | int | float)
    ]
    if choices and getattr(info.annotation, "__origin__", None) is Literal:
        return "; one of " + ", ".join(str(c) for c in choices)
    bounds = []
    for rule in info.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(rule, attr, None) is not None:
                bounds.append(f"{sign} {getattr(rule, attr)}")
    return "; " + ", ".join(bounds) if bounds else ""

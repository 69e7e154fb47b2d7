"""Configuration, declared once.

Each component declares its settings as a frozen dataclass whose fields are made with :func:`setting`
(default, documentation, secret flag). From that one declaration come:

- the environment variable of each field: ``INFERLOG_`` + the field name in capitals;
- the command-line flag: ``--`` + the field name with dashes (flags win over the environment);
- parsing and type conversion (``str``, ``int``, ``float``, ``bool``), with a :class:`ConfigError`
  naming the variable on a bad value, and the class's own ``validate()`` run before anything connects;
- the configuration table of the README (``inferlog config --markdown``), a redacted dump for logs, and a
  ``repr``/``str`` that shows ``***`` for every secret that is set (a config is logged and printed in
  tracebacks, so the secret must not depend on each caller remembering :func:`redacted`);
- the set of known ``INFERLOG_*`` names: :func:`load` refuses an unknown one (a typo such as
  ``INFERLOG_KAFKA_BOOTSTRAPS`` would otherwise leave the default in force without a word), naming the
  variable and the closest known name.

Every process must know the settings of *every* class, not only its own: the Kubernetes ConfigMap gives all
containers the same variables. Each distribution therefore declares the modules that define its settings
classes in the ``inferlog.config`` entry-point group, and :func:`config_classes` imports them before the check.
That keeps this module ignorant of the stages (the layers run downwards) while a subclass declared in one of
those modules, e.g. a new sink's config, is known without being listed anywhere else.

:class:`CommonConfig` holds what every process shares (addresses of Kafka, the registry, S3 and
OpenSearch, topic names, logging). Components subclass it and add their own fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import importlib
import importlib.metadata
import logging
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from core.errors import ConfigError

ENV_PREFIX = "INFERLOG_"
C = TypeVar("C", bound="CommonConfig")
ENTRY_POINT_GROUP = "inferlog.config"
ALLOW_UNKNOWN_ENV = "INFERLOG_ALLOW_UNKNOWN_ENV"
# INFERLOG_* variables that are not settings, with who reads them. They share the prefix so that one
# namespace holds everything the project reads, and so they must be declared to pass the unknown-name check.
NON_SETTING_ENV: dict[str, str] = {
    ALLOW_UNKNOWN_ENV: "1: only warn about unknown INFERLOG_* variables (a rollback to an image that predates "
    "a setting the shared ConfigMap already carries)",
    "INFERLOG_REQUIRE_INTEGRATION": "tests/conftest.py: 1 makes a missing local stack an error, not a skip",
    "INFERLOG_KEEP_STACK": "deploy/local/test.sh: 1 leaves running the stack the test run started",
    "INFERLOG_KUSTOMIZE": "tests/integration/test_deploy_k8s.py: the kustomize binary to render with",
}
_allowed_env: set[str] = set(NON_SETTING_ENV)
log = logging.getLogger(__name__)


def setting(default: Any, doc: str, *, secret: bool = False, choices: tuple[str, ...] = ()) -> Any:
    """Declare one setting: its default, one line of documentation, whether it is a secret."""
    # repr=False keeps a secret out of any repr that dataclasses generates; CommonConfig's own __repr__
    # still lists the field, redacted.
    return dataclasses.field(
        default=default, repr=not secret, metadata={"doc": doc, "secret": secret, "choices": choices}
    )


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _field_type(cls: type, f: dataclasses.Field[Any]) -> type:
    hints = typing.get_type_hints(cls)
    tp = hints[f.name]
    if isinstance(tp, types.UnionType):  # e.g. str | None: take the non-None member
        tp = next(t for t in typing.get_args(tp) if t is not type(None))
    return typing.cast(type, tp)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _convert(raw: str, tp: type, source: str) -> Any:
    try:
        if tp is bool:
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"expected one of {sorted(_TRUE | _FALSE - {''})}")
        if tp is int:
            return int(raw)
        if tp is float:
            return float(raw)
        return raw
    except ValueError as exc:
        raise ConfigError(f"{source}={raw!r} is not a valid {tp.__name__}: {exc}") from None


def allow_env(*names: str) -> None:
    """Declare ``INFERLOG_*`` variables that are not settings (for code outside this module that reads one)."""
    _allowed_env.update(names)


@functools.cache
def _import_declared_modules() -> tuple[str, ...]:
    """Import every module an installed distribution declares in the ``inferlog.config`` group, once; an entry
    point naming a function (``module:function``) is called too (``sinks.registry:specs`` imports every sink's
    module, and with it its settings class)."""
    names = []
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            loaded = ep.load()
            if ep.attr and callable(loaded):
                loaded()
        except ImportError as exc:
            raise ConfigError(
                f"entry point {ENTRY_POINT_GROUP}:{ep.name} = {ep.value} cannot be imported ({exc}); "
                "reinstall the distribution that declares it (pip install -e .)"
            ) from exc
        names.append(ep.value)
    return tuple(names)


def config_classes() -> list[type[CommonConfig]]:
    """:class:`CommonConfig` and every subclass, after importing the declared config modules."""
    _import_declared_modules()
    out: list[type[CommonConfig]] = []
    todo: list[type[CommonConfig]] = [CommonConfig]
    while todo:
        cls = todo.pop(0)
        if cls not in out:
            out.append(cls)
            todo.extend(cls.__subclasses__())
    return out


def known_env() -> set[str]:
    """Every ``INFERLOG_*`` name the project reads: each setting of each class, and the declared others."""
    names = {env_name(f.name) for cls in config_classes() for f in dataclasses.fields(cls)}
    return names | _allowed_env


def check_env(env: Mapping[str, str]) -> None:
    """Refuse ``INFERLOG_*`` variables that are not known, naming each with the closest known name
    (only a warning when ``INFERLOG_ALLOW_UNKNOWN_ENV`` is true)."""
    candidates = [name for name in env if name.startswith(ENV_PREFIX)]
    if not candidates:
        return
    known = known_env()
    unknown = sorted(name for name in candidates if name not in known)
    if not unknown:
        return
    # Compared without the shared prefix, which would make every name look close to every other.
    suffixes = {name.removeprefix(ENV_PREFIX): name for name in known}
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), sorted(suffixes), n=1)
        described.append(f"{name} (did you mean {suffixes[close[0]]}?)" if close else name)
    message = (
        f"unknown environment variable{'s' if len(unknown) > 1 else ''} {', '.join(described)}: not a setting "
        f"of inferlog (`inferlog config --markdown` lists them); set {ALLOW_UNKNOWN_ENV}=1 to only warn"
    )
    if env.get(ALLOW_UNKNOWN_ENV, "").strip().lower() in _TRUE:
        log.warning("%s", message)
        return
    raise ConfigError(message)


def load(
    cls: type[C],
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> C:
    """Build ``cls`` from defaults, then the environment, then ``overrides`` (e.g. parsed flags whose
    value is not ``None``), and validate it. An unknown ``INFERLOG_*`` name in ``env`` is an error."""
    env = os.environ if env is None else env
    check_env(env)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = _field_type(cls, f)
        name = env_name(f.name)
        if name in env:
            values[f.name] = _convert(env[name], tp, name)
        if overrides and overrides.get(f.name) is not None:
            value = overrides[f.name]
            values[f.name] = _convert(value, tp, flag_name(f.name)) if isinstance(value, str) else value
    cfg = cls(**values)
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices") or ()
        if choices and getattr(cfg, f.name) not in choices:
            raise ConfigError(f"{env_name(f.name)}={getattr(cfg, f.name)!r}: expected one of {list(choices)}")
    cfg.validate()
    return cfg


def add_flags(parser: argparse.ArgumentParser, cls: type[CommonConfig], *, skip: Iterable[str] = ()) -> set[str]:
    """Add one flag per setting of ``cls`` to ``parser``, except those named in ``skip`` (already added for
    another class); the help text shows doc, env var and default. Returns the names of the settings added."""
    group = parser.add_argument_group(f"settings ({cls.__name__}; flags override {ENV_PREFIX}* variables)")
    skipped = set(skip)
    added: set[str] = set()
    for f in dataclasses.fields(cls):
        if f.name in skipped:
            continue
        added.add(f.name)
        tp = _field_type(cls, f)
        default = "(secret)" if f.metadata.get("secret") and f.default else repr(f.default)
        help_text = f"{f.metadata.get('doc', '')} [env {env_name(f.name)}, default {default}]"
        help_text = help_text.replace("%", "%%")
        if tp is bool:
            group.add_argument(
                flag_name(f.name),
                dest=f.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        else:
            group.add_argument(
                flag_name(f.name),
                dest=f.name,
                default=None,
                metavar=tp.__name__.upper(),
                help=help_text,
                choices=list(f.metadata.get("choices") or ()) or None,
            )
    return added


def from_args(cls: type[C], args: argparse.Namespace) -> C:
    return load(cls, overrides={f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)})


def redacted(cfg: CommonConfig) -> dict[str, Any]:
    """The settings as a dict with secrets replaced, safe to log."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out[f.name] = "***" if f.metadata.get("secret") and value else value
    return out


def markdown_table(classes: list[type[CommonConfig]]) -> str:
    """The README's configuration table, one row per setting, each setting listed once."""
    rows = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
    seen: set[str] = set()
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name in seen:
                continue
            seen.add(f.name)
            default = "*(secret)*" if f.metadata.get("secret") else f"`{f.default!r}`"
            doc = str(f.metadata.get("doc", "")).replace("|", "\\|")
            rows.append(f"| `{env_name(f.name)}` | `{flag_name(f.name)}` | {default} | {doc} |")
    return "\n".join(rows)


def parse_pairs(raw: str, source: str, *, sep: str = ",", kv: str = "=") -> dict[str, str]:
    """Parse ``a=1,b=2`` into a dict; a clear error names the setting on a malformed item."""
    out: dict[str, str] = {}
    for item in (x.strip() for x in raw.split(sep)):
        if not item:
            continue
        key, eq, value = item.partition(kv)
        if not eq or not key.strip():
            raise ConfigError(f"{source}: {item!r} is not of the form key{kv}value")
        out[key.strip()] = value.strip()
    return out


def _redacted_repr(self: CommonConfig) -> str:
    fields = ", ".join(f"{name}={value!r}" for name, value in redacted(self).items())
    return f"{type(self).__qualname__}({fields})"


@dataclass(frozen=True)
class CommonConfig:
    """Settings every inferlog process shares."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # @dataclass writes a __repr__ only where the class body defines none; this runs before the
        # decorator, so every subclass keeps the redacting one instead of a generated repr.
        if "__repr__" not in cls.__dict__:
            setattr(cls, "__repr__", _redacted_repr)  # noqa: B010 (mypy refuses assigning a method)

    kafka_bootstrap: str = setting("127.0.0.1:19092", "Kafka bootstrap servers (host:port,...)")
    kafka_options: str = setting(
        "",
        "Extra librdkafka client settings as k=v,k=v (e.g. security.protocol=SASL_SSL,sasl.mechanism=PLAIN)",
        secret=True,
    )
    registry_url: str = setting("http://127.0.0.1:18081/apis/ccompat/v7", "Confluent-compatible schema registry URL")
    registry_auth: str = setting(
        "", "Schema registry basic-auth credentials as user:password (Confluent Cloud: API key:secret)", secret=True
    )
    s3_endpoint: str = setting("http://127.0.0.1:18333", "S3 API endpoint (empty for AWS's default)")
    s3_region: str = setting("us-east-1", "S3 region")
    s3_access_key: str = setting("inferlog", "S3 access key id", secret=True)
    s3_secret_key: str = setting("inferlog-secret", "S3 secret access key", secret=True)
    s3_bucket: str = setting("inferlog", "Bucket for archives and claim-checked bodies")
    opensearch_url: str = setting("http://127.0.0.1:19200", "OpenSearch URL")
    opensearch_user: str = setting("", "OpenSearch basic-auth user (empty: no auth)")
    opensearch_password: str = setting("", "OpenSearch basic-auth password", secret=True)
    opensearch_aws_region: str = setting(
        "", "Sign OpenSearch requests with AWS SigV4 for this region (Amazon OpenSearch Service; empty: basic auth)"
    )
    opensearch_aws_service: str = setting(
        "es", "SigV4 service name: es (OpenSearch Service domains) or aoss (Serverless)", choices=("es", "aoss")
    )
    topic_events: str = setting("inferlog.events", "Raw CloudEvents topic (source of truth, replayable)")
    topic_records: str = setting("inferlog.records", "Joined InferenceRecord topic (Avro)")
    topic_failures: str = setting("inferlog.failures", "FailureSignal topic (Avro)")
    topic_metadata: str = setting("inferlog.metadata", "Compacted model-metadata topic, key namespace/isvc")
    topic_deadletter: str = setting("inferlog.deadletter", "Dead-letter topic: original bytes + error.* headers")
    partitions: int = setting(12, "Partitions of the events, records and failures topics (co-partitioned)")
    replication_factor: int = setting(1, "Replication factor of created topics")
    events_retention_ms: int = setting(7 * 24 * 3600 * 1000, "Retention of the events topic, ms")
    log_level: str = setting("info", "Log level", choices=("debug", "info", "warning", "error"))
    log_format: str = setting("json", "Log format", choices=("json", "text"))

    __repr__ = _redacted_repr

    def validate(self) -> None:
        if not self.kafka_bootstrap.strip():
            raise ConfigError(f"{env_name('kafka_bootstrap')} must not be empty")
        for name in ("partitions", "replication_factor"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{env_name(name)} must be >= 1")
        for name in ("registry_url", "opensearch_url"):
            if not str(getattr(self, name)).startswith(("http://", "https://")):
                raise ConfigError(f"{env_name(name)} must be an http(s) URL")
        if self.s3_endpoint and not self.s3_endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"{env_name('s3_endpoint')} must be an http(s) URL or empty")
        self.kafka_extra()  # parse now so a malformed value fails before anything connects

    def kafka_extra(self) -> dict[str, str]:
        return parse_pairs(self.kafka_options, env_name("kafka_options"))

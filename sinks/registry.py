"""The sinks, each registered once: its name, config section, CLI help, metrics stage and reconciliation column.

``inferlog sink <name>``, ``inferlog run`` (one child per sink), ``inferlog stats`` (one column per sink), the
pipeline metrics stages and the README's configuration table are all derived from :data:`SINK_MODULES`. A sink
is one module that defines a :class:`~sinks.framework.Sink`, a :class:`~sinks.config.SinkConfig` subclass with
its own settings and, at its end, ``SPEC = SinkSpec(...)``; registering it is adding that module here. A sink
module must import cheaply (heavy clients are imported in ``setup``): the CLI imports every one to build
``--help``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from core import metrics
from core.errors import ConfigError

if TYPE_CHECKING:
    from sinks.config import SinkConfig
    from sinks.framework import Sink

__all__ = ["SINK_MODULES", "SinkSpec", "spec", "specs"]

#: The modules of the registered sinks, in the order they appear in help texts and tables.
SINK_MODULES = ("sinks.s3", "sinks.opensearch", "sinks.iceberg")

#: ``stored(cfg, topic, record_at)`` → the identities of the records the store holds: ``record_at`` maps the
#: Kafka coordinates ``(partition, offset)`` of each record of ``topic`` that was read to its identity
#: (:func:`schemas.wire.record_id`); a sink answers with the identities it finds, by coordinates or by id, or
#: ``None`` when the sink is evidently not in use here (its store was never created): the reconciliation then
#: leaves its column out instead of reporting every record as missing.
Stored = Callable[["SinkConfig", str, dict[tuple[int, int], str]], "set[str] | None"]


@dataclass(frozen=True)
class SinkSpec:
    """One registered sink.

    :param name: ``inferlog sink <name>``, the default consumer group ``inferlog-sink-<name>``, the ``sink``
        label of the sink metrics.
    :param help: one line for ``inferlog sink --help``.
    :param config: its settings: a :class:`~sinks.config.SinkConfig` subclass (the shared consumer and batching
        settings plus its own).
    :param sink: its class, made as ``sink(cfg)``.
    :param stage: the pipeline metrics stage (``inferlog_pipeline_events_total{stage=…}``) counted per record
        written, and the name of its column in the reconciliation.
    :param stage_doc: what the stage counts.
    :param stored: how the reconciliation finds the records in the store (see :data:`Stored`).
    """

    name: str
    help: str
    config: type[SinkConfig]
    sink: Callable[[Any], Sink]
    stage: str
    stage_doc: str
    stored: Stored

    def __post_init__(self) -> None:
        metrics.register_stage(self.stage, self.stage_doc)


@cache
def specs() -> tuple[SinkSpec, ...]:
    """Every registered sink, in :data:`SINK_MODULES` order."""
    out = []
    for module_name in SINK_MODULES:
        found = getattr(importlib.import_module(module_name), "SPEC", None)
        if not isinstance(found, SinkSpec):
            raise TypeError(f"{module_name} registers no SinkSpec (a module-level SPEC = SinkSpec(...))")
        out.append(found)
    names = [s.name for s in out]
    if len(set(names)) != len(names) or len({s.stage for s in out}) != len(out):
        raise TypeError(f"sink names and stages must be unique: {names}")
    return tuple(out)


def spec(name: str) -> SinkSpec:
    """The sink called ``name``; a :class:`ConfigError` lists the known ones."""
    for s in specs():
        if s.name == name:
            return s
    raise ConfigError(f"unknown sink {name!r}: one of {[s.name for s in specs()]}")

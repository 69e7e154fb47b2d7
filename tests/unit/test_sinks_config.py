"""The sinks' settings: the shared section and each sink's own, env and flags, validation, the registry."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from core import config
from core.errors import ConfigError
from sinks.config import SinkConfig
from sinks.opensearch import OpenSearchSinkConfig
from sinks.registry import specs
from sinks.s3 import S3SinkConfig


def test_env_and_flags() -> None:
    cfg = config.load(
        S3SinkConfig,
        env={"INFERLOG_FLUSH_RECORDS": "500", "INFERLOG_S3_FORMAT": "jsonl", "INFERLOG_SINK_TOPICS": "a, b"},
    )
    assert cfg.flush_records == 500 and cfg.s3_format == "jsonl" and cfg.topics() == ["a", "b"]
    parser = argparse.ArgumentParser()
    config.add_flags(parser, OpenSearchSinkConfig)
    cfg2 = config.from_args(OpenSearchSinkConfig, parser.parse_args(["--flush-span-s", "30", "--index-prefix", "logs"]))
    assert cfg2.flush_span_s == 30.0 and cfg2.index_prefix == "logs"
    assert cfg2.topics() == ["inferlog.records", "inferlog.failures"]
    assert cfg2.schema_for("inferlog.failures") == "failure_signal"
    assert cfg2.group_for("s3") == "inferlog-sink-s3"


@pytest.mark.parametrize(
    ("cls", "env"),
    [
        (SinkConfig, {"INFERLOG_FLUSH_RECORDS": "0"}),
        (S3SinkConfig, {"INFERLOG_S3_FORMAT": "csv"}),
        (OpenSearchSinkConfig, {"INFERLOG_INDEX_PREFIX": "Upper"}),
        (S3SinkConfig, {"INFERLOG_S3_MULTIPART_BYTES": "1000"}),
        (SinkConfig, {"INFERLOG_FLUSH_SPAN_S": "0"}),
    ],
)
def test_invalid_settings_are_rejected_before_connecting(cls: type[SinkConfig], env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        config.load(cls, env=env)


def test_a_sink_s_settings_are_its_own() -> None:
    """A sink's section holds the shared settings and its own, not another sink's."""
    s3 = {f for f in S3SinkConfig.__dataclass_fields__}
    search = {f for f in OpenSearchSinkConfig.__dataclass_fields__}
    assert "s3_prefix" in s3 and "index_prefix" not in s3
    assert "index_prefix" in search and "s3_prefix" not in search
    assert set(SinkConfig.__dataclass_fields__) <= s3 & search


def test_the_cli_has_one_subcommand_per_registered_sink() -> None:
    from inferlog.cli import build_parser

    names = [s.name for s in specs()]
    assert names == ["s3", "opensearch", "iceberg"]
    for spec in specs():
        args = build_parser().parse_args(["sink", spec.name])
        assert args.sink_kind == spec.name
    args = build_parser().parse_args(["sink", "s3", "--s3-prefix", "x"])
    assert args.s3_prefix == "x"
    with pytest.raises(SystemExit):  # another sink's setting is not a flag of this one
        build_parser().parse_args(["sink", "s3", "--index-prefix", "x"])


def test_the_registry_names_each_sink_s_stage_and_its_metrics_accept_it() -> None:
    from core import metrics

    stages = {s.name: s.stage for s in specs()}
    assert stages == {"s3": "archived", "opensearch": "indexed", "iceberg": "tabled"}
    for stage in stages.values():
        assert stage in metrics.STAGES
        metrics.count(stage, "ns", "isvc")
    with pytest.raises(ValueError):
        metrics.count("no-such-stage", "ns", "isvc")


def test_the_reconciliation_leaves_out_an_iceberg_sink_that_is_not_deployed(tmp_path: Path) -> None:
    """No catalog file: the sink never ran here. Its column is left out (None), and looking creates nothing."""
    from sinks.iceberg import IcebergSinkConfig, stored

    catalog = tmp_path / "nowhere" / "catalog.db"
    cfg = config.load(IcebergSinkConfig, env={"INFERLOG_ICEBERG_CATALOG_URI": f"sqlite:///{catalog}"})
    assert stored(cfg, cfg.topic_records, {(0, 1): "ns/isvc/predictor/id"}) is None
    assert not catalog.parent.exists()

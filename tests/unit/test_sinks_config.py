"""SinkConfig: env and flags, validation, defaults that depend on the sink."""

from __future__ import annotations

import argparse

import pytest

from core import config
from core.errors import ConfigError
from sinks.config import SinkConfig


def test_env_and_flags() -> None:
    cfg = config.load(
        SinkConfig,
        env={"INFERLOG_FLUSH_RECORDS": "500", "INFERLOG_S3_FORMAT": "jsonl", "INFERLOG_SINK_TOPICS": "a, b"},
    )
    assert cfg.flush_records == 500 and cfg.s3_format == "jsonl" and cfg.topics() == ["a", "b"]
    parser = argparse.ArgumentParser()
    config.add_flags(parser, SinkConfig)
    cfg = config.from_args(SinkConfig, parser.parse_args(["--flush-span-s", "30", "--index-prefix", "logs"]))
    assert cfg.flush_span_s == 30.0 and cfg.index_prefix == "logs"
    assert cfg.topics() == ["inferlog.records", "inferlog.failures"]
    assert cfg.schema_for("inferlog.failures") == "failure_signal"
    assert cfg.group_for("s3") == "inferlog-sink-s3"


@pytest.mark.parametrize(
    "env",
    [
        {"INFERLOG_FLUSH_RECORDS": "0"},
        {"INFERLOG_S3_FORMAT": "csv"},
        {"INFERLOG_INDEX_PREFIX": "Upper"},
        {"INFERLOG_S3_MULTIPART_BYTES": "1000"},
        {"INFERLOG_FLUSH_SPAN_S": "0"},
    ],
)
def test_invalid_settings_are_rejected_before_connecting(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        config.load(SinkConfig, env=env)


def test_cli_registers_both_sinks() -> None:
    from inferlog.cli import build_parser

    args = build_parser().parse_args(["sink", "s3", "--s3-prefix", "x"])
    assert args.handler.__name__ == "run_s3" and args.s3_prefix == "x"
    args = build_parser().parse_args(["sink", "opensearch"])
    assert args.handler.__name__ == "run_opensearch"

"""``inferlog topics`` and ``inferlog config``: bootstrap topics, show the settings."""

from __future__ import annotations

import argparse
import json

from core import config, logs
from core.config import CommonConfig
from core.topics import ensure_topics
from sinks.config import SinkConfig


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("topics", help="create inferlog's Kafka topics (idempotent)")
    config.add_flags(p, CommonConfig)
    p.set_defaults(handler=run_topics)

    c = sub.add_parser("config", help="print the effective settings (secrets redacted) or the settings table")
    c.add_argument("--markdown", action="store_true", help="print the README's configuration table")
    c.add_argument("--update-readme", metavar="PATH", help="rewrite the configuration table inside PATH")
    config.add_flags(c, CommonConfig)
    c.set_defaults(handler=run_config)


def run_topics(args: argparse.Namespace) -> int:
    cfg = config.from_args(CommonConfig, args)
    logs.setup(cfg.log_level, cfg.log_format)
    for topic, state in ensure_topics(cfg).items():
        print(f"{topic}: {state}")
    return 0


def all_config_classes() -> list[type[CommonConfig]]:
    """Every declared settings class, for the README table."""
    import importlib
    import importlib.util

    classes: list[type[CommonConfig]] = [CommonConfig]
    for module_name, attr in (
        ("ingest.config", "IngestConfig"),
        ("streams.config", "StreamsConfig"),
        ("sinks.config", "SinkConfig"),
        ("inferlog.console.config", "ConsoleConfig"),
        ("inferlog_stack.manager", "StackConfig"),
    ):
        if importlib.util.find_spec(module_name) is not None:
            classes.append(getattr(importlib.import_module(module_name), attr))
    from sinks.registry import specs

    classes[classes.index(SinkConfig) + 1 : classes.index(SinkConfig) + 1] = [s.config for s in specs()]
    return classes


START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def readme_with_table(text: str, table: str) -> str:
    """``text`` with the part between the config-table markers replaced by ``table``."""
    head, sep, rest = text.partition(START)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"markers {START} ... {END} not found")
    return f"{head}{START}\n{table}\n{END}{tail}"


def run_config(args: argparse.Namespace) -> int:
    if args.update_readme:
        from pathlib import Path

        path = Path(args.update_readme)
        path.write_text(readme_with_table(path.read_text(), config.markdown_table(all_config_classes())))
        return 0
    if args.markdown:
        print(config.markdown_table(all_config_classes()))
        return 0
    cfg = config.from_args(CommonConfig, args)
    print(json.dumps(config.redacted(cfg), indent=2))
    return 0

"""The ``inferlog`` command line: one console script, one subcommand per job.

Each package contributes its subcommands through a ``register(subparsers)`` function in its own ``cli``
module (listed in :data:`COMMAND_MODULES`), so a stage's flags live next to its code. Distributions installed
beside inferlog add theirs through the ``inferlog.commands`` entry-point group (the local development stack
adds ``stack`` and ``run``), so that nothing here imports them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Sequence

from core.errors import InferlogError
from inferlog import __version__

Handler = Callable[[argparse.Namespace], int]

# Modules that add subcommands, in the order they appear in --help (plugins follow).
COMMAND_MODULES = (
    "inferlog.admin_cli",
    "ingest.cli",
    "streams.cli",
    "sinks.cli",
    "inferlog.replay_cli",
    "inferlog.tail_cli",
    "inferlog.stats_cli",
    "inferlog.console_cli",
)
ENTRY_POINT_GROUP = "inferlog.commands"


def command_modules() -> list[str]:
    """The built-in command modules, then those of installed plugins (by entry-point name)."""
    plugins = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    return [*COMMAND_MODULES, *(ep.value for ep in plugins)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferlog",
        description="A durable pipeline for KServe inference payload logs: CloudEvents ingest → Kafka → "
        "Faust join → Parquet on S3 and OpenSearch. Every setting is a flag or an INFERLOG_* variable.",
    )
    parser.add_argument("--version", action="version", version=f"inferlog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules():
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except InferlogError as exc:
        print(f"inferlog {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

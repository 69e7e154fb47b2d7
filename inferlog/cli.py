"""The ``inferlog`` command line: one console script, one subcommand per job.

Each package contributes its subcommands through a ``register(subparsers)`` function in its own ``cli``
module (listed in :data:`COMMAND_MODULES`), so a stage's flags live next to its code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence

from inferlog import __version__
from inferlog.errors import InferlogError

Handler = Callable[[argparse.Namespace], int]

# Packages that add subcommands, in the order they appear in --help. A module that does not exist yet is
# skipped; one that exists but fails to import is an error.
COMMAND_MODULES = (
    "inferlog.stack.cli",
    "inferlog.admin_cli",
    "ingest.cli",
    "streams.cli",
    "sinks.cli",
    "inferlog.run_cli",
    "inferlog.replay_cli",
    "inferlog.tail_cli",
    "inferlog.stats_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferlog",
        description="A durable pipeline for KServe inference payload logs: CloudEvents ingest → Kafka → "
        "Faust join → Parquet on S3 and OpenSearch. Every setting is a flag or an INFERLOG_* variable.",
    )
    parser.add_argument("--version", action="version", version=f"inferlog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
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

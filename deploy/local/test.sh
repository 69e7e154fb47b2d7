#!/usr/bin/env bash
# The test command (`make test`): install, lint, type-check, start the real local stack, run every test.
# The stack is stopped at the end only if this run started it (a running stack is reused and left alone).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/bootstrap.sh
# The console's browser tests drive Debian's chromium (browser downloads cannot be fetched here); only the tests
# need it, so it is installed here and not by the bootstrap that `make run` shares.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing chromium with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test: chromium is missing (apt-get install -y chromium): the browser tests will be skipped" >&2
  fi
fi
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff";  ruff check .
ruff format --check .  # formatted as `ruff format` would
echo "== mypy";  mypy  # the packages, tests/ and bench/ ([tool.mypy] in pyproject.toml)
echo "== stack"
was_running=0
inferlog stack status >/dev/null 2>&1 && was_running=1
t0=$(date +%s)
inferlog stack start
echo "stack start took $(( $(date +%s) - t0 ))s (already running: $was_running)"
if [ "$was_running" = 0 ] && [ "${INFERLOG_KEEP_STACK:-0}" != 1 ]; then
  trap 'inferlog stack stop' EXIT
fi
inferlog topics --log-format text >/dev/null
echo "== pytest"
INFERLOG_REQUIRE_INTEGRATION=1 pytest tests "$@"

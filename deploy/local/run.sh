#!/usr/bin/env bash
# The main job (`make run`): install, start the local real stack, create the topics, run the pipeline.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
exec inferlog run --demo "$@"

#!/usr/bin/env bash
# Prepare a fresh machine from the project's own files: system packages (apt) if missing, the Python venv
# with inferlog, its dev extras and the local stack's own package (pip), and the servers' artifacts (Maven Central). Idempotent and quick
# on a second run. Used by `make run` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/../.."

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jdk-headless)
command -v mvn  >/dev/null 2>&1 || need_apt+=(maven)
command -v runuser >/dev/null 2>&1 || need_apt+=(util-linux)
# deploy/build-image.sh (the image test): buildah without a daemon, a base image from Debian's packages. Both
# need root to build, so only root gets them (the test skips elsewhere, naming them).
if [ "$(id -u)" = 0 ]; then
  command -v buildah >/dev/null 2>&1 || need_apt+=(buildah)
  command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${need_apt[*]} with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "bootstrap: missing ${need_apt[*]}: install them (apt-get install -y ${need_apt[*]})" >&2; exit 2
  fi
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then PY=$c; break; fi
  done
fi
[ -n "$PY" ] || { echo "bootstrap: Python >= 3.11 not found: install python3.11" >&2; exit 2; }

stamp=.venv/.installed-$(cat pyproject.toml deploy/local/pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev]" -e deploy/local  # inferlog, then the local stack beside it
  rm -f .venv/.installed-*; touch "$stamp"
fi

#!/usr/bin/env bash
# Check the monitoring manifests with the real promtool (`make monitoring-check`):
#   promtool check rules   the PrometheusRule's rules, and every Grafana dashboard query parsed as PromQL
#   promtool test rules    tests/*.test.yaml: synthetic series that make each alert fire and not fire
#   crdcheck               the PrometheusRule and PodMonitor decoded strictly into the operator's Go types
# render.py derives promtool's inputs from prometheusrule.yaml and grafana-dashboard.json (one source of truth).
#
# promtool: $PROMTOOL if set, else a pinned build cached in ~/.cache/inferlog/ ($XDG_CACHE_HOME), made once
# with `go install` from the Go module proxy in a private, throw-away module and build cache (about 2 GB while
# it builds; 8 CPU-minutes, 13-16 min on a busy 2-core machine: it compiles every service-discovery SDK that
# promtool links). The build is reproducible: the same binary each time.
# Exit codes: 0 passed, 1 a check failed, 3 no promtool and no Go toolchain to build one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)

# Prometheus v3.16.0 (the Go module's versions are v0.3xx.y for Prometheus 3.xx.y)
PROMTOOL_MODULE=github.com/prometheus/prometheus/cmd/promtool
PROMTOOL_VERSION=v0.316.0

go=$(command -v go || true)
if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go; fi

build_promtool() {  # build_promtool DEST
  local dest=$1 tmp
  if [ -z "$go" ]; then
    echo "check.sh: no promtool (set PROMTOOL) and no Go toolchain to build $PROMTOOL_MODULE@$PROMTOOL_VERSION" >&2
    exit 3
  fi
  tmp=$(mktemp -d "$(dirname "$dest")/build-XXXXXX")
  # shellcheck disable=SC2064  # expand $tmp now: it is local to this function
  trap "rm -rf '$tmp'" EXIT
  echo "building promtool $PROMTOOL_VERSION with $("$go" version) (once; cached in $(dirname "$dest"))" >&2
  local t0=$SECONDS
  GOBIN="$tmp/bin" GOPATH="$tmp/gopath" GOMODCACHE="$tmp/mod" GOCACHE="$tmp/cache" \
    GOFLAGS=-modcacherw GOTOOLCHAIN=local CGO_ENABLED=0 \
    "$go" install -trimpath -ldflags="-s -w" "$PROMTOOL_MODULE@$PROMTOOL_VERSION"
  mv "$tmp/bin/promtool" "$dest"
  rm -rf "$tmp"
  trap - EXIT
  echo "built promtool in $((SECONDS - t0))s" >&2
}

if [ -n "${PROMTOOL:-}" ]; then
  promtool=$PROMTOOL
else
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/inferlog/promtool-$PROMTOOL_VERSION"
  promtool="$cache/promtool"
  if [ ! -x "$promtool" ]; then
    mkdir -p "$cache"
    exec 9>"$cache/.lock"
    flock 9  # one builder at a time; the others wait, then use its binary
    [ -x "$promtool" ] || build_promtool "$promtool"
    exec 9>&-
  fi
fi

python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" "$here/render.py" "$work"

"$promtool" --version | head -1
echo "== promtool check rules"
"$promtool" check rules "$work/rules.yaml" "$work/dashboard-queries.yaml"
echo "== promtool test rules"
(cd "$work" && "$promtool" test rules ./*.test.yaml)
# The manifests themselves, decoded strictly into the Prometheus Operator's API types: a misspelt field such as
# honor_labels passes kustomize and promtool, and the API server prunes it or, validating strictly, refuses it.
# Small: seconds once the Go module cache has its few dependencies.
echo "== crdcheck (Prometheus Operator API types)"
if [ -n "$go" ]; then
  (cd "$here/crdcheck" && GOFLAGS=-mod=readonly GOTOOLCHAIN=local CGO_ENABLED=0 "$go" run . <"$work/manifests.yaml")
else
  echo "skipped: no Go toolchain" >&2
fi

# The two set-up commands of the README. Both install what they need from this repository's files.
.PHONY: run test demo stack-stop lock monitoring-check k8s-check

run:   ## start the local real stack and the whole pipeline, with demo traffic
	bash deploy/local/run.sh

test:  ## install, lint, type-check, start the local real stack, run all tests
	bash deploy/local/test.sh

stack-stop:
	.venv/bin/inferlog stack stop

# promtool check/test rules on deploy/k8s/monitoring (alerts and dashboard queries), then its pytest. The first
# run builds the pinned promtool from the Go module proxy into ~/.cache/inferlog (8 CPU-minutes: 13-16 min on
# a busy 2-core machine); `make test` runs the promtool tests only once that binary exists.
monitoring-check:  ## check the Prometheus alerts and the Grafana dashboard with the real promtool
	bash deploy/k8s/monitoring/check.sh
	.venv/bin/pytest -q tests/unit/test_monitoring_rules.py

# kubectl apply --dry-run=server of every overlay and example against a real kube-apiserver + etcd, with the
# Strimzi and KServe CRDs generated from their published artifacts (deploy/k8s-check/run.sh). Not in `make
# test`: the first run builds the binaries from the Go module proxy (about 14 min on a busy 2-core machine),
# cached in /var/tmp/inferlog-k8s-check; later runs take about 30 s. Needs Go, Maven, Java >= 21, openssl.
k8s-check:  ## the manifests against a real Kubernetes API server (slow the first time)
	bash deploy/k8s-check/run.sh

# The image's runtime dependencies, exact and hashed, for CPython 3.11 on linux x86_64 (deploy/Dockerfile
# installs from it). Run after changing [project.dependencies]: pins that still fit are kept (`make lock
# LOCK_FLAGS=--upgrade` moves every pin to the newest allowed). tests/unit/test_lock.py checks that it agrees.
LOCK_FLAGS ?=
LOCK_VENV ?= /tmp/inferlog-lock-venv
UV_VERSION ?= 0.13.9
lock:  ## regenerate requirements.lock from pyproject.toml
	test -x $(LOCK_VENV)/bin/uv || { python3 -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q uv==$(UV_VERSION); }
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --generate-hashes $(LOCK_FLAGS) --python-version 3.11 \
	  --python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock" --quiet -o requirements.lock

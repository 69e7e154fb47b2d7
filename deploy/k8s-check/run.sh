#!/usr/bin/env bash
# `make k8s-check`: are the manifests accepted by a real Kubernetes API server?
#
# Builds etcd, kube-apiserver and kubectl from the Go module proxy (apiserver/go.mod pins them; no release
# binary can be downloaded here), generates the CRDs of the custom resources from the projects' published
# artifacts (Strimzi: io.strimzi:api + io.strimzi:crd-generator from Maven Central; KServe: its Go API
# module through controller-gen), starts etcd and kube-apiserver on 127.0.0.1, installs the CRDs, and runs
# `kubectl apply --dry-run=server --validate=strict` (client-side and server-side apply) of every overlay
# and example. Prints one line per object; exits non-zero if any object is rejected or any pod template
# would violate the `restricted` Pod Security Standard. Stops and deletes everything it started.
#
# The binaries, Go caches and Maven artifacts are kept under INFERLOG_K8S_CHECK_CACHE (default
# /var/tmp/inferlog-k8s-check): the first run builds for a long while on 2 cores (see deploy/README.md),
# later runs take well under a minute. Not part of `make test` for that reason.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
K8S="$ROOT/deploy/k8s"
CACHE=${INFERLOG_K8S_CHECK_CACHE:-/var/tmp/inferlog-k8s-check}

K8S_VERSION=v1.37.2                 # apiserver/go.mod requires k8s.io/kubernetes at this version
STRIMZI_VERSION=1.2.0               # io.strimzi:api + io.strimzi:crd-generator (Maven Central)
CONTROLLER_TOOLS_VERSION=v0.19.0    # the controller-gen KServe v0.20.0 generates its CRDs with
# KServe builds its published CRDs with maxDescLen=0 (no descriptions); the schema is the same either way.
KSERVE_CRD_OPTIONS="crd:maxDescLen=0"

export GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gocache" GOPATH="$CACHE/gopath"
export GOFLAGS=-modcacherw GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$CACHE"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }
now() { date +%s; }

# ------------------------------------------------------------------------------------------ the binaries

# Keyed by what decides their content, so an edit of go.mod rebuilds and an unchanged tree reuses them.
bin_key=$(cat "$HERE/apiserver/go.mod" "$HERE/apiserver/go.sum" "$HERE/apiserver/etcd/main.go" \
  <(go version) <(echo "$K8S_VERSION") | sha256sum | cut -c1-16)
BIN="$CACHE/bin-$bin_key"
if [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kubectl" ] || [ ! -x "$BIN/etcd" ]; then
  log "building etcd, kube-apiserver and kubectl $K8S_VERSION into $BIN (cold: a long build on 2 cores)"
  t0=$(now)
  mkdir -p "$BIN.tmp"
  # gitVersion is what `version` endpoints and kubectl's skew warning report; the build sets no VCS info.
  (cd "$HERE/apiserver" && go build -trimpath \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
    -o "$BIN.tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl ./etcd)
  rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
  log "built in $(( $(now) - t0 ))s"
fi
KUBECTL="$BIN/kubectl"

CONTROLLER_GEN="$CACHE/tools/controller-gen-$CONTROLLER_TOOLS_VERSION/controller-gen"
if [ ! -x "$CONTROLLER_GEN" ]; then
  log "building controller-gen $CONTROLLER_TOOLS_VERSION"
  GOBIN=$(dirname "$CONTROLLER_GEN") go install -trimpath "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION"
fi

# Strimzi's api classes are compiled for Java 21: take the first Java >= 21 (JAVA_HOME, PATH, /usr/lib/jvm).
find_java() {
  local j v
  for j in ${INFERLOG_JAVA:-} ${JAVA_HOME:+$JAVA_HOME/bin/java} "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
    [ -n "$j" ] && [ -x "$j" ] || continue
    v=$("$j" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
    if [ -n "$v" ] && [ "${v%%.*}" -ge 21 ]; then echo "$j"; return 0; fi
  done
  return 1
}
JAVA=$(find_java) || { echo "k8s-check: Strimzi's crd-generator needs Java >= 21 (set INFERLOG_JAVA)" >&2; exit 2; }

M2="$CACHE/m2"
strimzi_jar() { echo "$M2/io/strimzi/$1/$STRIMZI_VERSION/$1-$STRIMZI_VERSION.jar"; }
for artifact in api crd-generator; do
  if [ ! -f "$(strimzi_jar $artifact)" ]; then
    log "fetching io.strimzi:$artifact:$STRIMZI_VERSION from Maven Central"
    # -C: fail on a checksum mismatch instead of warning; sed: Maven's colour codes, even with -q -B
    mvn -q -C -B -Dmaven.repo.local="$M2" dependency:get -Dtransitive=false \
      -Dartifact="io.strimzi:$artifact:$STRIMZI_VERSION" 2>&1 | sed 's/\x1b\[[0-9;]*m//g'
  fi
done

# --------------------------------------------------------------------------- the throw-away control plane

WORK=$(mktemp -d "${TMPDIR:-/tmp}/inferlog-k8s-check.XXXXXX")
ETCD_PID="" API_PID=""
stop() {
  local pid
  # the API server first: it holds connections to etcd
  for pid in $API_PID $ETCD_PID; do
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  ETCD_PID="" API_PID=""
}
cleanup() {
  local rc=$?
  stop
  if [ "$rc" != 0 ] && [ -d "$WORK" ]; then
    for f in "$WORK"/etcd.log "$WORK"/kube-apiserver.log; do
      [ -f "$f" ] && { echo "--- last lines of $(basename "$f")"; tail -n 25 "$f"; }
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Until "$@" succeeds, for at most $1 seconds; fails at once if a process we started has died.
wait_for() {
  local deadline=$(( $(now) + $1 )) what=$2 pid
  shift 2
  until "$@" >/dev/null 2>&1; do
    for pid in $ETCD_PID $API_PID; do
      kill -0 "$pid" 2>/dev/null || { echo "k8s-check: process $pid exited while waiting for $what" >&2; return 1; }
    done
    [ "$(now)" -lt "$deadline" ] || { echo "k8s-check: timed out waiting for $what" >&2; return 1; }
    sleep 0.2
  done
}

# Three free loopback ports (the kernel picks them; they are released just before use).
read -r ETCD_PORT PEER_PORT API_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')

log "certificates and keys in $WORK/pki"
PKI="$WORK/pki"
mkdir -p "$PKI"
(
  cd "$PKI"
  openssl_q() { openssl "$@" 2>/dev/null; }
  openssl_q req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 1 \
    -subj "/CN=inferlog-k8s-check-ca"
  # the serving certificate: kubectl connects to https://127.0.0.1:<port> and verifies it against ca.crt
  openssl_q req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout apiserver.key -out apiserver.csr \
    -subj "/CN=kube-apiserver"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >apiserver.ext
  openssl_q x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile apiserver.ext \
    -out apiserver.crt
  # client-certificate auth: O=system:masters is the built-in cluster-admin group
  openssl_q req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout admin.key -out admin.csr \
    -subj "/O=system:masters/CN=inferlog-k8s-check"
  printf 'extendedKeyUsage=clientAuth\n' >admin.ext
  openssl_q x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile admin.ext -out admin.crt
  # the service-account token signing key pair the API server insists on
  openssl_q genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
  openssl_q pkey -in sa.key -pubout -out sa.pub
)

log "etcd on 127.0.0.1:$ETCD_PORT"
# --unsafe-no-fsync: a throw-away store that lives for one run
"$BIN/etcd" --name k8s-check --data-dir "$WORK/etcd" --log-level warn --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "k8s-check=http://127.0.0.1:$PEER_PORT" --listen-metrics-urls "" \
  >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
wait_for 60 "etcd health" curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

log "kube-apiserver $K8S_VERSION on 127.0.0.1:$API_PORT"
t_api=$(now)
# Only what a dry run needs: no controllers, kubelets or cloud. The service CIDR is bookkeeping for
# Service validation (ClusterIP allocation), no traffic goes to it. No endpoint reconciler: it refuses a
# loopback advertise address, and nothing here resolves the `kubernetes` Service. Privileged pods allowed,
# as on real clusters (kubeadm, kind, the managed ones): Pod Security admission is what judges them.
"$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
  --cert-dir "$PKI" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
  --allow-privileged=true --profiling=false --v=1 \
  >"$WORK/kube-apiserver.log" 2>&1 &
API_PID=$!

KCFG="$WORK/kubeconfig"
k() { "$KUBECTL" --kubeconfig "$KCFG" --cache-dir "$WORK/kube-cache" "$@"; }
k config set-cluster check --server "https://127.0.0.1:$API_PORT" --certificate-authority "$PKI/ca.crt" \
  --embed-certs >/dev/null
k config set-credentials admin --client-certificate "$PKI/admin.crt" --client-key "$PKI/admin.key" \
  --embed-certs >/dev/null
k config set-context check --cluster check --user admin >/dev/null
k config use-context check >/dev/null
wait_for 180 "kube-apiserver /readyz" k get --raw /readyz
log "kube-apiserver ready in $(( $(now) - t_api ))s: $(k version -o json | grep -m1 gitVersion | tr -d ' ",')"

# ------------------------------------------------------------------------------------------------- CRDs

CRDS="$WORK/crds"
mkdir -p "$CRDS"
log "Strimzi $STRIMZI_VERSION CRDs from io.strimzi:api with io.strimzi:crd-generator"
# The arguments of Strimzi's own build for its install files (kafka.strimzi.io/v1, the only version of 1.x).
"$JAVA" -cp "$(strimzi_jar api):$(strimzi_jar crd-generator)" io.strimzi.crdgenerator.CrdGenerator \
  --label app:strimzi --label strimzi.io/crd-install:true --target-kube 1.16+ --crd-api-version v1 \
  --api-versions v1 --storage-version v1 --yaml \
  "io.strimzi.api.kafka.model.kafka.Kafka=$CRDS/strimzi-kafka.yaml" \
  "io.strimzi.api.kafka.model.nodepool.KafkaNodePool=$CRDS/strimzi-kafkanodepool.yaml" \
  "io.strimzi.api.kafka.model.topic.KafkaTopic=$CRDS/strimzi-kafkatopic.yaml"
log "KServe InferenceService CRD from github.com/kserve/kserve/pkg/apis/serving/v1beta1 with controller-gen"
(cd "$HERE/kserve-crd" && "$CONTROLLER_GEN" "$KSERVE_CRD_OPTIONS" \
  paths=github.com/kserve/kserve/pkg/apis/serving/v1beta1 output:crd:dir="$WORK/kserve-gen")
to_json() { k create --dry-run=client -o json -f "$1"; }  # kserve_crd.py needs no YAML library
to_json "$WORK/kserve-gen/serving.kserve.io_inferenceservices.yaml" >"$WORK/kserve-gen.json"
# KServe edits controller-gen's output before publishing it (kserve_crd.py says which edits and why) ...
python3 "$HERE/kserve_crd.py" fixup "$WORK/kserve-gen.json" "$CRDS/kserve-inferenceservice.json"
# ... and the result must equal the CRD file the same module ships, or the edits have drifted.
shipped="$(cd "$HERE/kserve-crd" && go list -m -f '{{.Dir}}' github.com/kserve/kserve)/config/crd/full/serving.kserve.io_inferenceservices.yaml"
to_json "$shipped" >"$WORK/kserve-shipped.json"
python3 "$HERE/kserve_crd.py" compare "$CRDS/kserve-inferenceservice.json" "$WORK/kserve-shipped.json"
# create, not apply: the Kafka CRD is larger than the last-applied annotation may be
k create -f "$CRDS" | sed 's/^/  /'
# (not `kubectl wait`: it errors out on a CRD whose status has no conditions yet)
established() { [ "$(k get crd "$1" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" = True ]; }
for crd in kafkas.kafka.strimzi.io kafkanodepools.kafka.strimzi.io kafkatopics.kafka.strimzi.io \
  inferenceservices.serving.kserve.io; do
  wait_for 60 "CRD $crd to be established" established "$crd"
  # Established can precede discovery by a moment: wait until the resource is served
  wait_for 60 "$crd to be served" k get "$crd" -A
done

# ------------------------------------------------------------------------------------------- the check

# Every overlay and every example, rendered by kubectl's own kustomize (as `kubectl apply -k` would; v5.8.1
# in kubectl v1.37.2, whose output here equals that of the v5.7.1 tests/integration/test_deploy_k8s.py pins).
targets=()
for d in "$K8S"/overlays/*/ "$K8S"/examples/*/; do
  [ -f "$d/kustomization.yaml" ] && targets+=("${d%/}")
done

# Namespaces the objects live in must exist for real (a dry-run Namespace is not persisted). They warn
# on anything the `restricted` Pod Security Standard forbids; the check treats such a warning as a failure.
ensure_namespaces() {  # those of the top-level objects of kustomize's output in $1
  local ns
  for ns in $(awk '/^[^ ]/ {meta = ($0 == "metadata:")} meta && /^  namespace: / {print $2}' "$1" | sort -u); do
    k get namespace "$ns" >/dev/null 2>&1 && continue
    # --save-config: the overlays' own Namespace objects are then applied over it without a warning
    k create namespace "$ns" --save-config >/dev/null
    k label namespace "$ns" pod-security.kubernetes.io/warn=restricted \
      pod-security.kubernetes.io/warn-version=latest >/dev/null
  done
}

failed=0
summary=()
mkdir -p "$WORK/rendered"
for target in "${targets[@]}"; do
  name=${target#"$K8S"/}
  file="$WORK/rendered/${name//\//-}.yaml"
  k kustomize "$target" >"$file"
  ensure_namespaces "$file"
  expected=$(grep -c '^kind: ' "$file")
  for mode in client-side server-side; do
    flags=(--dry-run=server --validate=strict)
    [ "$mode" = server-side ] && flags+=(--server-side --field-manager=inferlog-k8s-check)
    echo
    log "$name ($expected objects): kubectl apply ${flags[*]}"
    rc=0
    k apply "${flags[@]}" -f "$file" >"$WORK/out" 2>"$WORK/err" || rc=$?
    accepted=$(grep -c '(server dry run)$' "$WORK/out" || true)
    sed 's/^/  accepted  /' "$WORK/out"
    # kubectl reports each rejected object on stderr ("Error from server (...)") and carries on
    grep -v '^Warning: ' "$WORK/err" | sed 's/^/  REJECTED  /' || true
    psa=$(grep -c '^Warning: .*violate PodSecurity' "$WORK/err" || true)
    grep '^Warning: ' "$WORK/err" | sed 's/^/  warning   /' || true
    verdict=ok
    if [ "$rc" != 0 ] || [ "$accepted" != "$expected" ] || [ "$psa" != 0 ]; then
      verdict=FAILED
      failed=1
    fi
    summary+=("$verdict  $name $mode: $accepted/$expected accepted, $psa Pod Security warnings (kubectl exit $rc)")
  done
done

# The canaries: proof that the check sees what it is for. Each reject-* object must be rejected, each
# warn-* one accepted with a Pod Security warning; if not, the check is blind (a CRD without a schema,
# field validation off, namespaces without the warn label) and its "ok" above means nothing.
echo
log "canaries (deploy/k8s-check/canary): each must be caught"
for f in "$HERE"/canary/*.yaml; do
  canary=$(basename "$f" .yaml)
  # (normalised to kustomize's block style, which ensure_namespaces reads)
  ensure_namespaces <(k create --dry-run=client --validate=false -o yaml -f "$f")
  rc=0
  k apply --dry-run=server --validate=strict -f "$f" >"$WORK/out" 2>"$WORK/err" || rc=$?
  case $canary in
    # kubectl prints "Error from server (...)" or 'The <Kind> "<name>" is invalid: ...'
    reject-*) caught=$([ "$rc" != 0 ] && grep -qv '^Warning: ' "$WORK/err" && echo yes || echo no) ;;
    warn-*) caught=$([ "$rc" = 0 ] && grep -q '^Warning: .*violate PodSecurity' "$WORK/err" && echo yes || echo no) ;;
    *) caught=no ;;
  esac
  how=$(grep -m1 -E -v '^Warning: ' "$WORK/err" || grep -m1 'PodSecurity' "$WORK/err" || true)
  how=${how:0:240}
  if [ "$caught" = yes ]; then
    echo "  caught    $canary: $how"
  else
    echo "  MISSED    $canary (kubectl exit $rc): $(head -c 300 "$WORK/out" "$WORK/err" | tr '\n' ' ')"
    failed=1
  fi
  summary+=("$([ "$caught" = yes ] && echo ok || echo FAILED)  canary $canary caught: $caught")
done

echo
log "summary (kube-apiserver $K8S_VERSION, Strimzi $STRIMZI_VERSION CRDs, KServe $(awk '/kserve\/kserve v/ {print $NF}' "$HERE/kserve-crd/go.mod") CRD)"
printf '  %s\n' "${summary[@]}"
exit "$failed"

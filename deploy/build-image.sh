#!/usr/bin/env bash
# Build deploy/Dockerfile without Docker and without pulling anything from a container registry: buildah
# (chroot isolation, no daemon) on a base image made here from Debian's packages by mmdebstrap.
#
#   deploy/build-image.sh [TAG]          TAG defaults to localhost/inferlog:dev
#
# The base, localhost/inferlog-base:bookworm, is Debian 12 minbase with Debian's CPython 3.11 (python3.11,
# python3-venv) and ca-certificates. It is built once and kept in buildah's image storage under a label that
# hashes its recipe: a changed recipe builds a new one, INFERLOG_BASE_REFRESH=1 rebuilds it anyway (to take
# Debian's newest security updates). The image build keeps its layers (--layers, in buildah's storage), so a
# rebuild with an unchanged requirements.lock reuses the dependency layer and downloads nothing; the build stage
# is tagged TAG-build to keep that layer. Images these tags (and the base's) named before are removed.
# Needs root (mmdebstrap's root mode, buildah's storage); apt-get install -y buildah mmdebstrap.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-localhost/inferlog:dev}
base=localhost/inferlog-base:bookworm

for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null || { echo "build-image: $tool not found (apt-get install -y buildah mmdebstrap)" >&2; exit 2; }
done

suite=bookworm
mirrors=(
  "deb http://deb.debian.org/debian $suite main"
  "deb http://deb.debian.org/debian $suite-updates main"
  "deb http://deb.debian.org/debian-security $suite-security main"
)
# minbase without Recommends; the merged-usr hook sets up /usr as Debian 12 has it without the usrmerge
# package (which would bring perl along); no docs, man pages or translations (copyright files stay).
mm_args=(
  --variant=minbase
  --include=python3.11,python3-venv,ca-certificates
  --aptopt='APT::Install-Recommends "false"'
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
)
key=$(printf '%s\n' "$suite" "${mirrors[@]}" "${mm_args[@]}" | sha256sum | cut -c1-16)

image_id() { buildah images --quiet --no-trunc "$1" 2>/dev/null || true; }
previous_base=$(image_id "$base")
have_key=$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "io.inferlog.base-recipe"}}' "$base" 2>/dev/null || true)
if [ "$have_key" != "$key" ] || [ "${INFERLOG_BASE_REFRESH:-0}" = 1 ]; then
  echo "build-image: making $base from Debian $suite packages (mmdebstrap)" >&2
  t0=$(date +%s)
  # dpkg's fsyncs make up most of an install on this disk and buy nothing for a tarball: unsafe-io, and the
  # working tree in memory where there is room for it.
  tmp=/var/tmp
  [ -d /dev/shm ] && [ "$(df --output=avail -k /dev/shm | tail -1)" -gt 2000000 ] && tmp=/dev/shm
  work=$(mktemp -d "$tmp/inferlog-base.XXXXXX")
  tarball=$work/rootfs.tar
  trap 'rm -rf "$work"' EXIT
  TMPDIR=$tmp mmdebstrap --quiet "${mm_args[@]}" --dpkgopt=force-unsafe-io "$suite" "$tarball" "${mirrors[@]}"
  ctr=$(buildah from scratch)
  trap 'rm -rf "$work"; buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
  buildah add --quiet "$ctr" "$tarball" /
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd /bin/bash --label io.inferlog.base-recipe="$key" "$ctr"
  buildah commit --quiet --rm "$ctr" "$base" >/dev/null
  trap - EXIT
  rm -rf "$work"
  echo "build-image: $base made in $(( $(date +%s) - t0 ))s" >&2
fi

# The build's RUN steps see this machine's CA bundle (bind-mounted, in no layer), so pip reaches PyPI through
# a TLS-inspecting proxy; without one the file is an ordinary Debian CA bundle.
ca=${INFERLOG_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
vol=()
[ -f "$ca" ] && vol=(--volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro")
# The build stage gets a tag of its own (TAG-build): its last image is what keeps the cached dependency layer
# alive, and no other image refers to it. An image a tag named before is removed once the tag moves on (a
# changed source tree or lock), or every rebuild would leave ~600 MB behind, untagged.
case ${tag##*/} in *:*) build_tag=$tag-build ;; *) build_tag=$tag:build ;; esac
names=("$build_tag" "$tag" "$base")
previous=("$(image_id "$build_tag")" "$(image_id "$tag")" "$previous_base")
bud=(buildah bud --isolation chroot --layers --force-rm "${vol[@]}" --build-arg BASE="$base"
     -f "$root/deploy/Dockerfile" --ignorefile "$root/deploy/Dockerfile.dockerignore")
t0=$(date +%s)
"${bud[@]}" --target build -t "$build_tag" "$root"
"${bud[@]}" -t "$tag" "$root"
for i in 0 1 2; do
  if [ -n "${previous[$i]}" ] && [ "${previous[$i]}" != "$(image_id "${names[$i]}")" ]; then
    buildah rmi "${previous[$i]}" >/dev/null 2>&1 || true
  fi
done
echo "build-image: $tag built in $(( $(date +%s) - t0 ))s, $(buildah images --format '{{.Size}}' "$tag")" >&2

#!/usr/bin/env bash
# Builds the NanoDB server image without pulling anything: the debootstrap base from
# docker/base-image.sh (cached by tag), plus a server binary built on this host, through
# docker/Dockerfile.local. Prints the image tag on stdout.
#
#   NANODB_BIN        the server binary (default: target/release/nanodb-server, else
#                     target/debug/nanodb-server); its debug info is stripped in the image
#   NANODB_IMAGE      the tag to make (default nanodb:local)
#   NANODB_BASE_TAG   passed to docker/base-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."
image=${NANODB_IMAGE:-nanodb:local}
bin=${NANODB_BIN:-}
if [ -z "$bin" ]; then
  for b in target/release/nanodb-server target/debug/nanodb-server; do
    [ -x "$b" ] && { bin=$b; break; }
  done
fi
[ -n "$bin" ] && [ -x "$bin" ] \
  || { echo "build-image: no server binary; cargo build --release -p nanodb-server first, or set NANODB_BIN" >&2; exit 1; }

base=$(docker/base-image.sh)
ctx=$(mktemp -d /tmp/nanodb-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
# A debug build is mostly debug info: the image gets the code only.
strip --strip-debug -o "$ctx/nanodb-server" "$bin"
cp docker/healthcheck.sh "$ctx/healthcheck.sh"
cp docker/Dockerfile.local "$ctx/Dockerfile"
# The classic builder: BuildKit would try to resolve the base image's tag from a registry.
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$base" -t "$image" "$ctx" >"$ctx/build.log" 2>&1 \
  || { cat "$ctx/build.log" >&2; echo "build-image: docker build failed" >&2; exit 1; }
echo "build-image: made $image from $bin on $base" >&2
echo "$image"

#!/usr/bin/env bash
# Makes the base image NanoDB's local images start from, without any registry: a minimal Debian
# bookworm made by debootstrap and turned into an image with `docker import`. The result is cached
# by tag, so a second run returns at once. Prints the tag on stdout (everything else goes to
# stderr), so callers can write: base=$(docker/base-image.sh).
#
# Reused by docker/build-image.sh (the single-node image) and by the three-node cluster in
# containers (issue #17). The host must be able to run debootstrap (root, the Debian mirror
# reachable); the binary copied on top is built on the host, and bookworm matches the glibc of
# the Debian 12 build machines.
#
#   NANODB_BASE_TAG   the tag to make or reuse (default nanodb-base:bookworm)
#   DEBIAN_MIRROR     the mirror (default http://deb.debian.org/debian)
#   NANODB_BASE_REBUILD=1  rebuild even if the tag exists
set -euo pipefail
tag=${NANODB_BASE_TAG:-nanodb-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "${NANODB_BASE_REBUILD:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base-image: $tag is cached" >&2
  echo "$tag"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  echo "base-image: installing debootstrap" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi
root=$(mktemp -d /tmp/nanodb-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "base-image: debootstrap bookworm from $mirror (a few minutes, once)" >&2
# minbase: dpkg, apt, bash and coreutils; the server needs only glibc and libgcc. Bounded: a
# stalled mirror fails the build instead of hanging it.
timeout 900 debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -20 "$root.log" >&2; rm -f "$root.log"; echo "base-image: debootstrap failed" >&2; exit 1; }
rm -f "$root.log"
# Leave out what an image does not need: package caches, lists, docs, logs.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/var/log/*
tar -C "$root" --numeric-owner -c . \
  | docker import --change 'CMD ["/bin/bash"]' --message "debootstrap --variant=minbase bookworm" - "$tag" >/dev/null
echo "base-image: made $tag" >&2
echo "$tag"

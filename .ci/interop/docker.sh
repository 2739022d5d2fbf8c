#!/usr/bin/env bash
# The Docker image, built and run here (docker/smoke-test.sh): a debootstrap base (cached by tag,
# so only the first CI run on a machine pays for it), the host-built server, every protocol
# checked through published loopback ports, a restart with the data kept on a named volume.
# Needs a Docker engine; set NANODB_CI_DOCKER=optional to skip on a machine without one.
. "$(dirname "$0")/../lib.sh"
if ! docker info >/dev/null 2>&1; then
  [ "${NANODB_CI_DOCKER:-required}" = optional ] && { echo "docker: no engine here; skipped (NANODB_CI_DOCKER=optional)"; exit 0; }
  fail "no Docker engine (docker info failed); set NANODB_CI_DOCKER=optional to skip this check"
fi
need_apt redis-tools curl
# The compose file users run stays valid (it builds with docker/Dockerfile, which needs a registry).
if command -v docker-compose >/dev/null; then
  docker-compose -f docker/compose.yaml config -q || fail "docker/compose.yaml does not parse"
elif docker compose version >/dev/null 2>&1; then
  docker compose -f docker/compose.yaml config -q || fail "docker/compose.yaml does not parse"
fi
# 20 minutes covers a first debootstrap on a slow mirror; later runs take well under a minute.
NANODB_BIN="$NANODB_BIN" timeout 1200 docker/smoke-test.sh || fail "docker smoke test"

#!/bin/bash
# The image's HEALTHCHECK: healthy while GET /readyz on the REST port answers 200, which it does
# once the data directory is recovered and until shutdown begins (then 503).
#
# The runtime image (debian:bookworm-slim) has no curl or wget; bash and its /dev/tcp are enough
# for one HTTP/1.1 request. The REST address is NANODB_HTTP_ADDR, as the server reads it (the
# image sets 0.0.0.0:8080); set NANODB_HEALTHCHECK_ADDR if the server gets it another way (a
# --http-addr flag or a --config file). REST must be on (not `off`) for the check to pass.
set -u
addr=${NANODB_HEALTHCHECK_ADDR:-${NANODB_HTTP_ADDR:-127.0.0.1:8080}}
case $addr in
  [Oo][Ff][Ff]) echo "nanodb-healthcheck: REST is off; /readyz cannot be checked" >&2; exit 1 ;;
esac
port=${addr##*:}
host=${addr%:*}
case $host in
  # A wildcard listener is reachable on loopback.
  0.0.0.0 | '[::]' | '::' | '') host=127.0.0.1 ;;
  '['*']') host=${host#[}; host=${host%]} ;;
esac
# Docker's --timeout bounds the connect; the reply gets 2 s.
if ! exec 3<>"/dev/tcp/$host/$port"; then
  echo "nanodb-healthcheck: cannot connect to $host:$port" >&2
  exit 1
fi
printf 'GET /readyz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3
if ! IFS= read -r -t 2 status <&3; then
  echo "nanodb-healthcheck: no answer from $host:$port" >&2
  exit 1
fi
status=${status%$'\r'}
case $status in
  'HTTP/1.1 200 '*) exit 0 ;;
  *) echo "nanodb-healthcheck: /readyz answered: $status" >&2; exit 1 ;;
esac

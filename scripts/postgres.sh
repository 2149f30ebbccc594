#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, from the installed binaries (Debian's postgresql
# package): `scripts/postgres.sh start DIR` creates and starts one in DIR (initdb, as an
# unprivileged user when run as root; listening on a free loopback port and a Unix socket in
# DIR; passwords required over TCP) and prints its URL; `scripts/postgres.sh stop DIR` stops it.
set -euo pipefail
action=${1:?usage: postgres.sh start|stop DIR}
dir=${2:?usage: postgres.sh start|stop DIR}
dir=$(realpath -m "$dir")  # absolute: the server runs from /
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ] && command -v pg_ctl >/dev/null; then bin=$(dirname "$(command -v pg_ctl)"); fi
[ -n "$bin" ] || { echo "postgres.sh: no PostgreSQL binaries found (initdb, pg_ctl)" >&2; exit 1; }

as_owner() {  # PostgreSQL refuses to run as root: run it as the owner of DIR (from /, which
  # that user can enter, unlike a root-only working directory)
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u nobody -- "$@"); else "$@"; fi
}

case "$action" in
start)
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown nobody "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  password=prefill-guard-ci
  printf '%s\n' "$password" | as_owner tee "$dir/pwfile" >/dev/null
  as_owner "$bin/initdb" --pgdata "$dir/data" --username prefill_guard --pwfile "$dir/pwfile" \
    --auth-local trust --auth-host scram-sha-256 --encoding UTF8 --no-locale >"$dir/initdb.log"
  as_owner "$bin/pg_ctl" --pgdata "$dir/data" --log "$dir/server.log" --wait \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" \
    start >/dev/null
  echo "postgresql://prefill_guard:$password@127.0.0.1:$port/postgres"
  ;;
stop)
  as_owner "$bin/pg_ctl" --pgdata "$dir/data" --mode fast --wait stop >/dev/null
  ;;
*)
  echo "usage: postgres.sh start|stop DIR" >&2
  exit 2
  ;;
esac

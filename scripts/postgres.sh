#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback, for the RDB storage tests (tests/test_postgres.py).
#
#   bash scripts/postgres.sh start DIR [PORT]   # prints the URL: export it as AUTOPEFT_TEST_POSTGRES
#   bash scripts/postgres.sh stop DIR
#
# Uses Debian's `postgresql` package (apt-get install -y postgresql). The server trusts local
# connections and keeps its data in DIR, so it is for tests only. PostgreSQL refuses to run as
# root: as root the server runs as the `postgres` user the package creates.
set -euo pipefail
action="${1:?usage: postgres.sh start|stop DIR [PORT]}"
dir="$(realpath -m "${2:?usage: postgres.sh start|stop DIR [PORT]}")"
port="${3:-55432}"

bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
[ -n "$bin" ] || bin="$(dirname "$(command -v initdb 2>/dev/null || echo /none/initdb)")"
[ -x "$bin/initdb" ] || { echo "postgres.sh: no initdb found (apt-get install -y postgresql)" >&2; exit 2; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$action" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log"
    fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  *)
    echo "postgres.sh: unknown action '$action' (start or stop)" >&2; exit 2
    ;;
esac

#!/usr/bin/env bash
# Makes sure PostgreSQL answers on DATABASE_URL and that its database exists.
#
#   postgres.sh start [URL]   use the server at URL when it answers; otherwise start a
#                             private cluster on URL's port (installing PostgreSQL with
#                             apt-get when its binaries are missing)
#   postgres.sh stop  [URL]   stop the private cluster on URL's port, if these scripts started it
#
# The private cluster lives under the cache directory; as root (initdb refuses root)
# it runs as the `postgres` user under /var/tmp/event-processor instead, because
# that user cannot enter root's home.
source "$(dirname "$0")/env.sh"

cmd=${1:-start}
url=${2:-$DATABASE_URL}
re='^postgres(ql)?://([^:@/]+)(:([^@]*))?@([^:/?]+)(:([0-9]+))?/([^?]+)'
[[ $url =~ $re ]] || die "DATABASE_URL: expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, got '$url'"
pg_user=${BASH_REMATCH[2]} pg_host=${BASH_REMATCH[5]} pg_port=${BASH_REMATCH[7]:-5432} pg_db=${BASH_REMATCH[8]}
admin_url="${url%%/"$pg_db"*}/postgres"

if [ "$(id -u)" = 0 ]; then
  data_dir=/var/tmp/event-processor/postgres-$pg_port
  as_pg() { runuser -u postgres -- "$@"; }
else
  data_dir=$CACHE_DIR/postgres-$pg_port
  as_pg() { "$@"; }
fi
pid_file="$RUN_DIR/postgres-$pg_port.datadir"

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ]; then
    [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed; run: sudo apt-get install -y postgresql"
    log "installing PostgreSQL with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$dir"
}

answers() { psql "$admin_url" -Atqc 'SELECT 1' >/dev/null 2>&1; }

start() {
  command -v psql >/dev/null || PATH="$(pg_bin):$PATH"
  if ! answers; then
    case "$pg_host" in 127.0.0.1|localhost) ;; *) die "PostgreSQL at $pg_host:$pg_port does not answer (DATABASE_URL)";; esac
    local bin; bin=$(pg_bin)
    if [ ! -s "$data_dir/PG_VERSION" ]; then
      log "creating a private PostgreSQL cluster in $data_dir"
      mkdir -p "$data_dir"
      [ "$(id -u)" = 0 ] && chown postgres: "$data_dir"
      as_pg "$bin/initdb" -D "$data_dir" -U "$pg_user" --auth=trust -E UTF8 >/dev/null
    fi
    log "starting PostgreSQL on 127.0.0.1:$pg_port"
    # A port can be briefly held by a connection's local end: retried a few times.
    local attempt
    for attempt in 1 2 3 4 5; do
      as_pg "$bin/pg_ctl" -D "$data_dir" -l "$data_dir/server.log" -w -t 60 \
        -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $data_dir" start >/dev/null && break
      tail -n 5 "$data_dir/server.log" | grep -q "Address already in use" && [ "$attempt" -lt 5 ] \
        || die "PostgreSQL did not start; see $data_dir/server.log"
      log "port $pg_port is in use; retrying in 2 s"
      sleep 2
    done
    echo "$data_dir" > "$pid_file"
    answers || die "PostgreSQL started but $admin_url does not answer"
  fi
  if [ "$(psql "$admin_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$pg_db'")" != 1 ]; then
    log "creating database $pg_db"
    psql "$admin_url" -qc "CREATE DATABASE \"$pg_db\"" >/dev/null
  fi
}

stop() {
  [ -f "$pid_file" ] || return 0
  local dir; dir=$(cat "$pid_file")
  log "stopping the private PostgreSQL cluster on port $pg_port"
  as_pg "$(pg_bin)/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
  rm -f "$pid_file"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) die "usage: postgres.sh start|stop [DATABASE_URL]" ;;
esac

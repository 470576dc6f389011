#!/usr/bin/env bash
# The quick start: the whole platform on one machine. Starts LocalStack and PostgreSQL
# (installing what is missing), builds, applies the migrations and the demo registry,
# runs the processor, the fake consumers, the sender and the API, lets the producers send a
# realistic mix (valid events across tenants, bad input, duplicates), then verifies
# that every acknowledged event was stored exactly once and reached every consumer
# subscribed to it, in order, and shows the counts:
#
#   producers -> SQS -> processor -> PostgreSQL -> sender -> consumers
#
#   deployments/local/run.sh          then keeps the services running (Ctrl-C stops them)
#   deployments/local/run.sh --once   stops them after the check (the test command uses it)
#
# EVENTS (default 5000) and RATE (events/s, default 1000) size the producers' run.
source "$(dirname "$0")/env.sh"
here=$(cd "$(dirname "$0")" && pwd)
once=false
[ "${1:-}" = "--once" ] && once=true

"$here/start.sh"
cd "$ROOT"
if [ ! -f .env ]; then
  cp .env-template .env
  log "created .env from .env-template (edit it to change settings)"
fi
log "building (release)"
cargo build --release --bins --quiet
bin="$ROOT/target/release"

log "applying the demo registry (deployments/registry.json: tenants, event types, consumers)"
"$bin/processor" registry apply deployments/registry.json >/dev/null

pids=()
# start NAME READY_PATTERN COMMAND...: runs a service in the background, logging to
# $CACHE_DIR/NAME.log, and waits until its log shows READY_PATTERN.
start() {
  local name=$1 ready=$2 log_file="$CACHE_DIR/$1.log"
  shift 2
  "$@" >"$log_file" 2>&1 &
  local pid=$!
  pids+=("$pid")
  echo "$pid" > "$RUN_DIR/$name-$pid.pid"
  for _ in $(seq 1 60); do
    grep -q "$ready" "$log_file" 2>/dev/null && { log "$name running (pid $pid, log: $log_file)"; return; }
    kill -0 "$pid" 2>/dev/null || { cat "$log_file" >&2; die "$name did not start"; }
    sleep 0.5
  done
  die "$name did not report '$ready' within 30 s (log: $log_file)"
}
# Stops every service started here with SIGTERM; fails when one did not exit cleanly.
stop_all() {
  local status=0 pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    wait "$pid" || status=$?
    rm -f "$RUN_DIR"/*-"$pid".pid
  done
  pids=()
  return $status
}
trap 'stop_all; exit 130' INT TERM

# The fake consumers check signatures with the secrets the registry generated; the
# export that carries them stays in the cache directory (mode 600).
secrets="$CACHE_DIR/registry-with-secrets.json"
(umask 077 && "$bin/processor" registry export --with-secrets > "$secrets")
record="$CACHE_DIR/consumers-received.jsonl"
rm -f "$record"

start processor "processor started" "$bin/processor"
start consumers "fake consumers listening" "$bin/consumers" --registry "$secrets" --record "$record"
start sender "sender started" "$bin/sender"
start api "serving the API" "$bin/api"

manifest="$CACHE_DIR/run-manifest.jsonl"
log "producers: ${EVENTS:-5000} events at ${RATE:-1000}/s over 10 tenants, 5% bad input, 2% duplicates"
"$bin/producers" --count "${EVENTS:-5000}" --rate "${RATE:-1000}" --clients 10 \
  --invalid-ratio 0.05 --duplicate-ratio 0.02 --manifest "$manifest"

log "verifying every acknowledged event: stored exactly once, delivered to every subscribed consumer"
verified=0
"$bin/producers" verify --manifest "$manifest" --consumers-record "$record" --wait-secs 120 || verified=$?
grep "progress" "$CACHE_DIR/processor.log" | tail -n 1 || true

psql "$DATABASE_URL" -c 'SELECT count(*) AS stored FROM message;' \
  -c 'SELECT reason, count(*) FROM rejected_message GROUP BY reason ORDER BY reason;' \
  -c "SELECT status, count(*) AS attempts FROM delivery_attempt GROUP BY status ORDER BY status;"
"$bin/sender" consumers list
"$here/readme-examples.sh"
# The scrape check of the test command (run.sh --once): while the services are up,
# Prometheus scrapes them and every series the alert rules and the dashboard use must
# exist (deployments/local/check-metrics.sh). A failure fails the run after the stop.
scraped=0
if $once; then "$here/check-metrics.sh" || scraped=$?; fi
log "the API answers on http://$API_ADDR (admin key: API_ADMIN_KEY in .env); try:"
log "  curl -s -H \"Authorization: Bearer \$API_ADMIN_KEY\" http://$API_ADDR/v1/clients"

if $once; then
  log "stopping the services (SIGTERM)"
  stopped=0
  stop_all || stopped=$?
  [ "$stopped" = 0 ] || die "a service exited with $stopped after SIGTERM"
  [ "$scraped" = 0 ] || die "the scrape check failed (see above)"
  exit "$verified"
fi
[ "$verified" = 0 ] || log "verification FAILED (see above); the services keep running for inspection"
log "the platform keeps running; send more with target/release/producers --rate 100, or"
log "deployments/local/awslocal sqs send-message ...; watch deliveries in $record. Ctrl-C stops it."
tail -n 0 -f "$CACHE_DIR/sender.log" &
tail_pid=$!
trap 'kill "$tail_pid" 2>/dev/null; stop_all; exit 0' INT TERM
wait "${pids[0]}"

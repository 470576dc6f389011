#!/usr/bin/env bash
# The quick start: starts LocalStack and PostgreSQL (installing what is missing),
# builds, applies the migrations and the demo registry, runs the processor, lets the
# producers send a realistic mix (valid events across tenants, bad input, duplicates),
# verifies that every acknowledged event was stored exactly once, and shows the count.
#
#   deployments/local/run.sh          then keeps the processor running (Ctrl-C stops it)
#   deployments/local/run.sh --once   stops the processor after the check (the test command uses it)
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

log "applying the demo registry (deployments/registry.json)"
"$bin/processor" registry apply deployments/registry.json >/dev/null

processor_log="$CACHE_DIR/processor.log"
"$bin/processor" >"$processor_log" 2>&1 &
pid=$!
echo "$pid" > "$RUN_DIR/processor-$pid.pid"
stop_processor() {
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid"
    local status=$?
    rm -f "$RUN_DIR/processor-$pid.pid"
    return $status
  fi
}
trap 'stop_processor; exit 130' INT TERM
for _ in $(seq 1 60); do
  grep -q "processor started" "$processor_log" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$processor_log" >&2; die "the processor did not start"; }
  sleep 0.5
done
log "processor running (pid $pid, log: $processor_log)"

manifest="$CACHE_DIR/run-manifest.jsonl"
log "producers: ${EVENTS:-5000} events at ${RATE:-1000}/s over 10 tenants, 5% bad input, 2% duplicates"
"$bin/producers" --count "${EVENTS:-5000}" --rate "${RATE:-1000}" --clients 10 \
  --invalid-ratio 0.05 --duplicate-ratio 0.02 --manifest "$manifest"

log "verifying every acknowledged event (waits for the queue to drain)"
verified=0
"$bin/producers" verify --manifest "$manifest" --wait-secs 120 || verified=$?
grep "progress" "$processor_log" | tail -n 1 || true

psql "$DATABASE_URL" -c 'SELECT count(*) FROM message;' \
  -c 'SELECT reason, count(*) FROM rejected_message GROUP BY reason ORDER BY reason;'

if $once; then
  log "stopping the processor (SIGTERM)"
  stopped=0
  stop_processor || stopped=$?
  [ "$stopped" = 0 ] || die "the processor exited with $stopped after SIGTERM"
  exit "$verified"
fi
[ "$verified" = 0 ] || log "verification FAILED (see above); the processor keeps running for inspection"
log "the processor keeps running; send more with deployments/local/awslocal sqs send-message ..., or"
log "target/release/producers --rate 100. Ctrl-C stops it. Its log follows:"
tail -n 5 -f "$processor_log" &
tail_pid=$!
trap 'kill "$tail_pid" 2>/dev/null; stop_processor; exit 0' INT TERM
wait "$pid"

#!/usr/bin/env bash
# The fault-injection suite: for each scenario, producers send with a manifest, one or
# more processors run, a fault is injected, the system recovers by itself, the queue
# drains, and `producers verify` checks that every acknowledged event is stored exactly
# once. Each scenario prints lost, duplicated, misclassified, dead-lettered and the time
# to recover, and fails unless the first four are 0. The delivery scenarios (sender_*,
# consumer_*) also run the fake consumers and the sender, and check with the consumers'
# record that every stored event reached every active subscribed consumer, in order;
# deliveries made twice (at least once, after a crash) are counted and shown.
#
#   deployments/local/faults.sh                 every scenario (about 8 minutes)
#   deployments/local/faults.sh kill9 sqs       some of them
#   deployments/local/faults.sh --long          10x the events per scenario
#
# The database is a private PostgreSQL cluster on FAULT_PG_PORT (default 25432, below
# the ports Linux hands out for outgoing connections, which a connection's local end
# could be holding), so stopping it never disturbs other users of the machine's
# PostgreSQL. The SQS outage cuts a TCP proxy between the processor and LocalStack
# instead of stopping LocalStack.
source "$(dirname "$0")/env.sh"
here=$(cd "$(dirname "$0")" && pwd)
ALL=(kill9 pg_outage slow_db read_only_db db_blackhole sqs_outage replicas sigterm hostile checker
     sender_kill9 consumer_500 consumer_slow consumer_410 sender_replicas sender_pg_outage api_hostile)
scale=1
scenarios=()
for arg in "$@"; do
  case "$arg" in
    --long) scale=10 ;;
    *) scenarios+=("$arg") ;;
  esac
done
[ ${#scenarios[@]} -gt 0 ] || scenarios=("${ALL[@]}")

FAULT_PG_PORT=${FAULT_PG_PORT:-25432}
pg_server="postgres://postgres@127.0.0.1:$FAULT_PG_PORT"
db_url="$pg_server/ep_faults"
work="$CACHE_DIR/faults"
mkdir -p "$work"
results="$work/results.md"
printf '| scenario | events | lost | duplicated | misclassified | dead-lettered | delivered | delivered twice | out of order | recovery (s) | result |\n|---|---|---|---|---|---|---|---|---|---|---|\n' > "$results"

"$here/start.sh" >/dev/null
"$here/postgres.sh" start "$db_url"
cd "$ROOT"
cargo build --release --bins --quiet
bin="$ROOT/target/release"
pids=()
failed=0

cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "${proxy_pid:-}" ] && kill "$proxy_pid" 2>/dev/null || true
  "$here/postgres.sh" start "$db_url" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# A fresh database on the private cluster and a fresh queue pair.
prepare() { # VISIBILITY MAX_RECEIVE
  psql "$pg_server/postgres" -qc "DROP DATABASE IF EXISTS ep_faults WITH (FORCE)" >/dev/null
  psql "$pg_server/postgres" -qc "CREATE DATABASE ep_faults" >/dev/null
  DATABASE_URL=$db_url "$bin/processor" registry apply deployments/registry.json >/dev/null 2>&1
  local name="ep-fault-$scenario-$(date +%s%N)"
  aws sqs create-queue --queue-name "$name-dlq" >/dev/null
  local dlq_url dlq_arn
  dlq_url=$(aws sqs get-queue-url --queue-name "$name-dlq" --output text --query QueueUrl)
  dlq_arn=$(aws sqs get-queue-attributes --queue-url "$dlq_url" --attribute-names QueueArn --output text --query Attributes.QueueArn)
  queue_url=$(aws sqs create-queue --queue-name "$name" --attributes \
    "$(printf '{"VisibilityTimeout":"%s","RedrivePolicy":"{\\"deadLetterTargetArn\\":\\"%s\\",\\"maxReceiveCount\\":\\"%s\\"}"}' "$1" "$dlq_arn" "$2")" \
    --output text --query QueueUrl)
  export DATABASE_URL=$db_url SQS_QUEUE_URL=$queue_url SQS_DLQ_NAME="$name-dlq"
  export PROCESSOR_WAIT_TIME_SECS=5 PROCESSOR_STATS_INTERVAL_SECS=2 PROCESSOR_SHUTDOWN_TIMEOUT_SECS=10 PROCESSOR_HTTP_ADDR=127.0.0.1:0
  manifest="$work/$scenario.jsonl"
  record=""
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The fake consumers on a free port, recording to $record, with two push consumers
# registered against them (client-1/audit: every type; client-2/alerts: monitor-app)
# plus the extra NAME:CLIENT:TYPES:WINDOW ones given.
start_consumers() {
  # Only these consumers: not the demo registry's, which point at the run command's port.
  psql "$db_url" -qc "DELETE FROM consumer" >/dev/null
  consumers_port=$(free_port)
  record="$work/$scenario-received.jsonl"
  rm -f "$record"
  secret="whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
  local specs=("audit:client-1:monitor-app,transaction-app,user-app:1" "alerts:client-2:monitor-app:1" "$@") args=() spec
  for spec in "${specs[@]}"; do args+=(--consumer "${spec%%:*}=$secret"); done
  "$bin/consumers" --addr "127.0.0.1:$consumers_port" --record "$record" "${args[@]}" >>"$work/$scenario-consumers.log" 2>&1 &
  pids+=("$!")
  for spec in "${specs[@]}"; do
    IFS=: read -r name client types window <<<"$spec"
    CONSUMER_SECRET=$secret "$bin/sender" consumers add --client "$client" --name "$name" --start beginning \
      --endpoint "http://127.0.0.1:$consumers_port/$name" --event-types "$types" --max-in-flight "$window" >/dev/null 2>&1
  done
}

# PUT /_control/NAME on the fake consumers.
control() { curl -sf -X PUT -H 'content-type: application/json' -d "$2" "http://127.0.0.1:$consumers_port/_control/$1" >/dev/null; }

start_sender() { # NAME [VAR=VALUE ...]
  local name=$1; shift
  env SENDER_ALLOWED_NETWORKS=127.0.0.0/8 SENDER_LEASE_SECS=5 SENDER_RETRY_SCHEDULE=1s,2s,5s,10s,20s,30s \
    SENDER_HTTP_ADDR=127.0.0.1:0 "$@" "$bin/sender" >>"$work/$scenario-sender-$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  eval "sender_$name=$pid"
}

start_processor() { # NAME [VAR=VALUE ...]
  local name=$1; shift
  env "$@" "$bin/processor" >>"$work/$scenario-$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  eval "pid_$name=$pid"
}

produce() { # COUNT RATE [FLAGS...]  (in the background; sets producers_pid)
  local count=$(( $1 * scale )) rate=$2; shift 2
  "$bin/producers" --count "$count" --rate "$rate" --manifest "$manifest" --quiet "$@" >"$work/$scenario-producers.log" 2>&1 &
  producers_pid=$!
}

# Waits for the producers, then for the processors to drain; records the verdict.
finish() { # RECOVERY_START_EPOCH
  wait "$producers_pid" || { cat "$work/$scenario-producers.log" >&2; echo "producers failed" >&2; }
  local report="$work/$scenario-verify.json" ok=0
  "$bin/producers" verify --manifest "$manifest" --wait-secs 180 --json ${record:+--consumers-record "$record"} >"$report" || ok=$?
  local recovered; recovered=$(python3 -c "import time;print(round(time.time() - $1, 1))")
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  python3 - "$report" "$scenario" "$recovered" "${extra_failure:-}" >>"$results" <<'PY' || failed=1
import json, sys
report, scenario, recovered, extra = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
dead = report.get("dead_lettered") or 0
bad = report["lost"] or report["duplicated"] or report["misclassified"] or dead or extra
delivery = report.get("delivery")
delivered = twice = disorder = "-"
if delivery:
    active = [c for c in delivery["consumers"] if c["state"] == "active"]
    undelivered = sum(c["undelivered"] for c in active)
    delivered = sum(c["delivered"] for c in delivery["consumers"])
    twice = sum(c["delivered_more_than_once"] for c in delivery["consumers"])
    disorder = sum(c["out_of_order"] for c in delivery["consumers"])
    if undelivered:
        extra = (extra + "; " if extra else "") + f"{undelivered} undelivered"
    bad = bad or undelivered or disorder
    for c in delivery["consumers"]:
        print(f"<!-- {c} -->")
print(f"| {scenario} | {report['acknowledged']} | {report['lost']} | {report['duplicated']} | {report['misclassified']} "
      f"| {dead} | {delivered} | {twice} | {disorder} | {recovered} | {'FAILED ' + extra if bad else 'ok'} |")
for e in report["examples"][:5]:
    print(f"<!-- {e} -->")
sys.exit(1 if bad else 0)
PY
  tail -n 1 "$results" | grep -v '^<!--' || true
  extra_failure=""
}

expect() { # CONDITION-DESCRIPTION COMMAND...
  local what=$1; shift
  if ! "$@"; then extra_failure="${extra_failure:+$extra_failure; }$what"; echo "  check failed: $what" >&2; fi
}

kill9() {
  prepare 5 10
  start_processor a
  produce 6000 1000
  for _ in 1 2 3; do
    sleep 1.5
    kill -9 "$pid_a"; wait "$pid_a" 2>/dev/null || true
    start_processor a
  done
  finish "$(date +%s.%N)"
}

pg_outage() {
  prepare 30 5
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  start_processor a PROCESSOR_HTTP_ADDR="127.0.0.1:$port"
  produce 8000 400
  sleep 4
  log "stopping PostgreSQL for 30 s"
  "$here/postgres.sh" stop "$db_url"
  sleep 25
  local down_status; down_status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$port/readyz" || true)
  sleep 5
  "$here/postgres.sh" start "$db_url"
  local back; back=$(date +%s.%N)
  sleep 3
  local up_status; up_status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$port/readyz" || true)
  echo "  /readyz during the outage: $down_status, after: $up_status"
  finish "$back"
  expect "processor paused receiving" grep -q "receiving paused" "$work/$scenario-a.log"
  expect "processor resumed by itself" grep -q "receiving resumed" "$work/$scenario-a.log"
  expect "not ready while the database is down" test "$down_status" = 503
  expect "ready again after" test "$up_status" = 200
}

slow_db() {
  prepare 5 10
  start_processor a
  produce 3000 500
  sleep 2
  log "holding a lock on message for 12 s (visibility timeout 5 s)"
  psql "$db_url" -qc "BEGIN; LOCK TABLE message IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(12); COMMIT;" >/dev/null
  finish "$(date +%s.%N)"
  expect "no event processed twice" grep -q "duplicates: 0," "$work/$scenario-a.log"
  expect "visibility was extended" grep -qE "extended: [1-9]" "$work/$scenario-a.log"
}

# The database refuses writes (a failover to a standby, `default_transaction_read_only`)
# for three minutes while reads still work, and the queue dead-letters after only 2
# receives: the processor must pause rather than cycle messages into the DLQ.
read_only_db() {
  prepare 30 2
  local port; port=$(free_port)
  start_processor a PROCESSOR_HTTP_ADDR="127.0.0.1:$port" PROCESSOR_RELEASE_AFTER_SECS=20
  produce 3000 300
  sleep 3
  log "PostgreSQL read-only for 180 s (maxReceiveCount 2)"
  read_only on
  sleep $((180 * scale))
  local down_status; down_status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$port/readyz" || true)
  read_only off
  local back; back=$(date +%s.%N)
  echo "  /readyz while read-only: $down_status"
  finish "$back"
  expect "processor paused receiving" grep -q "receiving paused" "$work/$scenario-a.log"
  expect "not ready while the database refuses writes" test "$down_status" = 503
}

read_only() { # on|off: for new sessions, and the open ones are ended so they take it
  psql "$pg_server/postgres" -qc "ALTER DATABASE ep_faults SET default_transaction_read_only = $1" >/dev/null
  psql "$pg_server/postgres" -qAtc "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
    WHERE datname = 'ep_faults' AND pid <> pg_backend_pid()" >/dev/null
}

# The path to PostgreSQL goes silent for 60 s (no FIN, no RST: a half-open connection):
# commits must hit their deadline, and nothing may hang or be lost.
db_blackhole() {
  prepare 30 5
  local control="$work/pg-proxy" port; port=$(free_port)
  rm -f "$control" "$control.count"
  python3 "$here/tcp_proxy.py" "$port" "$FAULT_PG_PORT" "$control" 2>>"$work/$scenario-proxy.log" &
  proxy_pid=$!
  sleep 0.5
  local proxied="postgres://postgres@127.0.0.1:$port/ep_faults" http; http=$(free_port)
  start_processor a DATABASE_URL="$proxied" DATABASE_TIMEOUT_SECS=5 PROCESSOR_HTTP_ADDR="127.0.0.1:$http"
  produce 4000 400
  sleep 3
  log "blackholing the path to PostgreSQL for 60 s"
  echo blackhole >"$control"
  sleep 60
  local health; health=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$http/readyz" || true)
  rm -f "$control"
  local back; back=$(date +%s.%N)
  echo "  /readyz during the blackhole: $health"
  finish "$back"
  kill "$proxy_pid"; proxy_pid=""
  expect "commits cut off at their deadline" grep -q "no answer from the database" "$work/$scenario-a.log"
  expect "not ready while the database is silent" test "$health" = 503
}

sqs_outage() {
  prepare 30 5
  local control="$work/proxy-cut" port=$((LOCALSTACK_PORT + 101))
  rm -f "$control" "$control.count"
  python3 "$here/tcp_proxy.py" "$port" "$LOCALSTACK_PORT" "$control" &
  proxy_pid=$!
  sleep 0.5
  start_processor a AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  produce 4000 400
  sleep 3
  log "cutting the path to SQS for 10 s"
  touch "$control"
  sleep 10
  local attempts; attempts=$(cat "$control.count")
  rm -f "$control"
  finish "$(date +%s.%N)"
  kill "$proxy_pid"; proxy_pid=""
  echo "  connection attempts during the 10 s outage: $attempts"
  expect "no hot loop ($attempts connection attempts in 10 s)" test "$attempts" -lt 300
  expect "outage logged" grep -q "receive failed" "$work/$scenario-a.log"
}

replicas() {
  prepare 10 10
  start_processor a; start_processor b; start_processor c
  produce 9000 1500
  sleep 3
  log "restarting replica b"
  kill -TERM "$pid_b"; wait "$pid_b" || true
  start_processor b
  finish "$(date +%s.%N)"
}

sigterm() {
  prepare 30 5
  produce 10000 0
  start_processor a
  sleep 2
  local started; started=$(date +%s.%N)
  kill -TERM "$pid_a"
  local status=0
  wait "$pid_a" || status=$?
  local took; took=$(python3 -c "import time;print(round(time.time() - $started, 1))")
  echo "  SIGTERM during the burst: exit code $status after ${took}s"
  expect "exit code 0 after SIGTERM (got $status)" test "$status" = 0
  expect "exit within the shutdown timeout (${took}s)" python3 -c "import sys; sys.exit(0 if $took < 10 else 1)"
  start_processor b
  finish "$started"
}

hostile() {
  prepare 30 5
  start_processor a
  produce 4000 0 --invalid-ratio 0.3
  finish "$(date +%s.%N)"
  local n; n=$(psql "$db_url" -Atc "SELECT count(*) FROM rejected_message")
  echo "  rejected rows: $n"
  expect "at least 1000 malformed bodies (got $n)" test "$n" -ge $((1000 * scale))
  expect "the processor never crashed" grep -q "processor stopped" "$work/$scenario-a.log"
}

# The checker itself must fail when the invariant is broken: corrupt the manifest.
checker() {
  prepare 30 5
  start_processor a
  produce 500 0
  wait "$producers_pid"
  "$bin/producers" verify --manifest "$manifest" --wait-secs 60 >/dev/null || { echo "  verify failed on a good run" >&2; failed=1; }
  echo '{"event_id":"never-sent","client_id":"client-1","sqs_message_id":"never-sent","expect":"stored","kind":"valid"}' >>"$manifest"
  if "$bin/producers" verify --manifest "$manifest" >"$work/checker-broken.txt"; then
    echo "  verify passed a manifest with an event that was never stored" >&2; failed=1
  else
    echo "  verify caught the corrupted manifest: $(grep '^lost' "$work/checker-broken.txt")"
  fi
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  pids=()
}

# --- Delivery: the sender and the consumers under faults ---

sender_kill9() {
  prepare 30 5
  start_processor a
  start_consumers
  start_sender a
  produce 3000 500 --clients 3
  for _ in 1 2 3; do
    sleep 2
    kill -9 "$sender_a"; wait "$sender_a" 2>/dev/null || true
    start_sender a
  done
  finish "$(date +%s.%N)"
}

consumer_500() {
  prepare 30 5
  start_processor a
  start_consumers
  start_sender a
  produce 2000 400 --clients 3
  sleep 1
  log "consumer client-1/audit answers 500 for 30 s"
  control audit '{"status_for_secs": {"status": 500, "secs": 30}}'
  sleep 30
  finish "$(date +%s.%N)"
  expect "retries were logged" grep -q "delivery failed" "$work/$scenario-sender-a.log"
  expect "nothing parked" test "$(psql "$db_url" -Atc 'SELECT count(*) FROM parked_delivery')" = 0
}

consumer_slow() {
  prepare 30 5
  start_processor a
  start_consumers "slow:client-1:monitor-app:20"
  control slow '{"delay_ms": 2000}'
  start_sender a
  produce 2000 400 --clients 3
  finish "$(date +%s.%N)"
  # The healthy consumer's delivery lag (stored_at to arrival) stays low next to the slow one.
  psql "$db_url" -Atc "SELECT event_id, extract(epoch FROM stored_at) FROM message" >"$work/$scenario-stored.txt"
  local lags; lags=$(python3 - "$record" "$work/$scenario-stored.txt" <<'PY'
import json, sys, datetime
stored = dict(line.rsplit("|", 1) for line in open(sys.argv[2]).read().split("\n") if line)
lags = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    at = datetime.datetime.fromisoformat(r["received_at"].replace("Z", "+00:00")).timestamp()
    lags.setdefault(r["consumer"], []).append(at - float(stored[r["event_id"]]))
def p(xs, q): xs = sorted(xs); return xs[min(len(xs) - 1, int(q * len(xs)))]
print(" ".join(f"{c}:p50={p(x, .5):.3f}s,p99={p(x, .99):.3f}s" for c, x in sorted(lags.items())))
print(p(lags["audit"], .99))
PY
)
  echo "  delivery lag: $(head -n 1 <<<"$lags")"
  expect "the healthy consumer's p99 lag stays under 2 s" python3 -c "import sys; sys.exit(0 if $(tail -n 1 <<<"$lags") < 2 else 1)"
}

consumer_410() {
  prepare 30 5
  start_processor a
  start_consumers "removed:client-1:user-app:1"
  control removed '{"gone": true}'
  start_sender a
  produce 2000 400 --clients 3
  finish "$(date +%s.%N)"
  expect "the 410 consumer is disabled" test "$(psql "$db_url" -Atc "SELECT state FROM consumer WHERE name = 'removed'")" = disabled
  expect "its reason is shown" grep -q "410" <("$bin/sender" consumers list)
}

sender_replicas() {
  prepare 30 5
  start_processor a
  start_consumers "extra:client-3:user-app:1" "more:client-1:transaction-app:2"
  start_sender a
  start_sender b
  produce 3000 500 --clients 3
  sleep 3
  log "kill -9 of sender a (its consumers move to b when the 5 s lease runs out)"
  kill -9 "$sender_a"; wait "$sender_a" 2>/dev/null || true
  finish "$(date +%s.%N)"
  expect "sender b took consumers over" grep -q "delivering" "$work/$scenario-sender-b.log"
}

sender_pg_outage() {
  prepare 30 5
  start_processor a
  start_consumers
  start_sender a
  produce 3000 200 --clients 3
  sleep 4
  log "stopping PostgreSQL for 30 s during delivery"
  "$here/postgres.sh" stop "$db_url"
  sleep 30
  "$here/postgres.sh" start "$db_url"
  finish "$(date +%s.%N)"
  expect "the sender logged the outage" grep -qE "delivery step failed|lease renewal failed" "$work/$scenario-sender-a.log"
}

# Hostile input through the API: every bad body is refused with the processor's reason
# (the producers check each refusal against what they generated), the rest is stored.
api_hostile() {
  prepare 30 5
  start_processor a
  local port; port=$(free_port)
  API_ADDR="127.0.0.1:$port" "$bin/api" >>"$work/$scenario-api.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
  produce 3000 0 --invalid-ratio 0.3 --api-url "http://127.0.0.1:$port"
  finish "$(date +%s.%N)"
  grep "refused by the API" "$work/$scenario-producers.log" | sed 's/^/  /'
  expect "every hostile body refused with the expected reason" grep -q ", 0 of them for another reason" "$work/$scenario-producers.log"
}

for scenario in "${scenarios[@]}"; do
  log "scenario: $scenario"
  "$scenario"
  # Checks made after `finish` belong to this scenario, not to the next one's row.
  if [ -n "${extra_failure:-}" ]; then
    echo "| $scenario | checks after the run: FAILED $extra_failure |" >>"$results"
    failed=1
    extra_failure=""
  fi
done
echo
grep -v '^<!--' "$results"
exit "$failed"

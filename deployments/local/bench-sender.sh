#!/usr/bin/env bash
# Sender benchmark: deliveries per second and sender CPU per delivery, against a raw
# ceiling measured in the same run (the same HTTP client posting the same bodies to the
# same fake consumers, no database, no signing during the run); then, with the processor
# running and producers sending at RATE (default: about half the raw SQS drain rate),
# the time from SentTimestamp to arrival at a consumer (p50, p99).
#
#   deployments/local/bench-sender.sh            # N=50000 events, 4 consumers, RUNS=3
#   N=5000 RUNS=1 deployments/local/bench-sender.sh
source "$(dirname "$0")/env.sh"
N=${N:-50000}
RUNS=${RUNS:-3}
RATE=${RATE:-1400}
LATENCY_N=${LATENCY_N:-10000}

bench_setup bench-sender
db="$server/ep_bench_sender"
results="$out/results.jsonl"
: > "$results"
export DATABASE_URL=$db SENDER_ALLOWED_NETWORKS=127.0.0.0/8 SENDER_HTTP_ADDR=127.0.0.1:0 RUST_LOG=warn
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cpu_of() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

# A fresh database with N events for client-1 and four consumers of them on fresh fake
# consumers; sets consumers_pid and record. The table is analyzed, as autovacuum keeps a
# table in service: right after a bulk load without statistics, PostgreSQL may sort
# every remaining row of a page read instead of walking the index.
prepare() {
  psql "$server/postgres" -qc "DROP DATABASE IF EXISTS ep_bench_sender WITH (FORCE)" -c "CREATE DATABASE ep_bench_sender" >/dev/null
  "$bin/processor" registry apply deployments/registry.json >/dev/null 2>&1
  psql "$db" -qc "DELETE FROM consumer" -c "
    INSERT INTO message (client_id, event_id, event_type, version, payload, occurred_at, received_at, sqs_message_id)
    SELECT 'client-1', 'bench-' || i, 'user-app', 2,
           jsonb_build_object('user_id', 'usr-' || lpad(i::text, 8, '0'), 'action', 'login',
                              'at', '2026-11-22T10:00:00Z', 'ip', '10.0.' || (i % 250) || '.' || (i % 200),
                              'device', jsonb_build_object('os', 'linux', 'agent', repeat('x', 120))),
           now(), now(), 'sqs-' || i
    FROM generate_series(1, $N) AS i" -c "ANALYZE message" >/dev/null
  port=$(free_port)
  local secret; secret="whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
  record="$out/received.jsonl"
  rm -f "$record"
  "$bin/consumers" --addr "127.0.0.1:$port" --record "$record" \
    --consumer "c1=$secret" --consumer "c2=$secret" --consumer "c3=$secret" --consumer "c4=$secret" >"$out/consumers.log" 2>&1 &
  consumers_pid=$!
  pids+=("$consumers_pid")
  for c in c1 c2 c3 c4; do
    CONSUMER_SECRET=$secret "$bin/sender" consumers add --client client-1 --name "$c" --start beginning \
      --endpoint "http://127.0.0.1:$port/$c" --event-types user-app --max-in-flight "${WINDOW:-1}" >/dev/null 2>&1
  done
  sleep 0.5
}

for run in $(seq 1 "$RUNS"); do
  log "run $run/$RUNS: ceiling (raw posts of the same bodies)"
  prepare
  "$bin/sender" ceiling --client client-1 > "$out/ceiling.json"
  kill "$consumers_pid"; wait "$consumers_pid" 2>/dev/null || true

  log "run $run/$RUNS: sender ($N events x 4 consumers)"
  prepare
  "$bin/sender" >"$out/sender.log" 2>&1 &
  sender_pid=$!
  pids+=("$sender_pid")
  total=$((N * 4))
  cpu0=$(cpu_of "$sender_pid")
  # Progress from the fake consumers' counters (reading the record file would cost CPU
  # the run needs); the rate from the first and last arrival in the record.
  delivered() { local n=0 c; for c in c1 c2 c3 c4; do
      n=$((n + $(curl -s "http://127.0.0.1:$port/$c/received" | python3 -c 'import json,sys; print(json.load(sys.stdin)["received"])'))); done; echo "$n"; }
  while [ "$(delivered)" -lt "$total" ]; do
    kill -0 "$sender_pid" 2>/dev/null || { cat "$out/sender.log" >&2; die "the sender died"; }
    sleep 0.5
  done
  cpu1=$(cpu_of "$sender_pid")
  read -r started ended < <(python3 - "$record" <<'PY'
import json, sys, datetime
lines = open(sys.argv[1]).read().splitlines()
t = lambda l: datetime.datetime.fromisoformat(json.loads(l)["received_at"].replace("Z", "+00:00")).timestamp()
print(t(lines[0]), t(lines[-1]))
PY
)
  kill -TERM "$sender_pid"; wait "$sender_pid" || true
  kill "$consumers_pid"; wait "$consumers_pid" 2>/dev/null || true
  python3 - "$out/ceiling.json" "$started" "$ended" "$cpu0" "$cpu1" "$total" "$run" >>"$results" <<'PY'
import json, sys
ceiling = json.load(open(sys.argv[1]))
started, ended, cpu0, cpu1, total, run = map(float, sys.argv[2:8])
seconds = ended - started
rate = total / seconds
cpu_us = (cpu1 - cpu0) * 1e6 / total
print(json.dumps({"run": int(run), "deliveries": int(total), "sender_per_s": round(rate), "ceiling_per_s": round(ceiling["per_second"]),
                  "ratio": round(rate / ceiling["per_second"], 3), "sender_cpu_us": round(cpu_us, 1),
                  "ceiling_cpu_us": round(ceiling["cpu_us_per_delivery"], 1),
                  "cpu_ratio": round(cpu_us / max(ceiling["cpu_us_per_delivery"], 1e-9), 2)}))
PY
  tail -n 1 "$results"
done

log "latency: processor + sender running, producers at $RATE/s, SentTimestamp -> arrival at a consumer"
psql "$server/postgres" -qc "DROP DATABASE IF EXISTS ep_bench_sender WITH (FORCE)" -c "CREATE DATABASE ep_bench_sender" >/dev/null
"$bin/processor" registry apply deployments/registry.json >/dev/null 2>&1
psql "$db" -qc "DELETE FROM consumer" >/dev/null
port=$(free_port)
secret="whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
record="$out/latency.jsonl"
rm -f "$record"
"$bin/consumers" --addr "127.0.0.1:$port" --record "$record" --consumer "c1=$secret" --consumer "c2=$secret" >"$out/consumers.log" 2>&1 &
pids+=("$!")
CONSUMER_SECRET=$secret "$bin/sender" consumers add --client client-1 --name c1 --start new \
  --endpoint "http://127.0.0.1:$port/c1" --event-types monitor-app,transaction-app,user-app >/dev/null 2>&1
CONSUMER_SECRET=$secret "$bin/sender" consumers add --client client-2 --name c2 --start new \
  --endpoint "http://127.0.0.1:$port/c2" --event-types monitor-app,transaction-app,user-app >/dev/null 2>&1
queue=$("$VENV/bin/awslocal" sqs create-queue --queue-name "ep-bench-sender-$(date +%s)" --output text --query QueueUrl)
SQS_QUEUE_URL=$queue PROCESSOR_HTTP_ADDR=127.0.0.1:0 PROCESSOR_STATS_INTERVAL_SECS=0 "$bin/processor" >"$out/processor.log" 2>&1 &
pids+=("$!")
"$bin/sender" >"$out/sender-latency.log" 2>&1 &
pids+=("$!")
sleep 2
SQS_QUEUE_URL=$queue "$bin/producers" --count "$LATENCY_N" --rate "$RATE" --clients 2 --quiet >/dev/null 2>&1
sleep 5
psql "$db" -Atc "SELECT event_id, extract(epoch FROM sent_at) FROM message WHERE sent_at IS NOT NULL" >"$out/sent.txt"
python3 - "$record" "$out/sent.txt" "$results" <<'PY'
import json, sys, datetime, statistics
sent = dict(l.rsplit("|", 1) for l in open(sys.argv[2]).read().split("\n") if l)
lags = []
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["event_id"] in sent:
        at = datetime.datetime.fromisoformat(r["received_at"].replace("Z", "+00:00")).timestamp()
        lags.append(at - float(sent[r["event_id"]]))
lags.sort()
p = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] * 1000
runs = [json.loads(l) for l in open(sys.argv[3]) if l.strip()]
med = lambda k: statistics.median(r[k] for r in runs)
print(f"deliveries/s: sender {med('sender_per_s'):.0f}, ceiling {med('ceiling_per_s'):.0f}, ratio {med('ratio'):.3f} (median of {len(runs)})")
print(f"CPU per delivery: sender {med('sender_cpu_us'):.1f} us, ceiling {med('ceiling_cpu_us'):.1f} us, ratio {med('cpu_ratio'):.2f}")
print(f"SentTimestamp -> consumer: {len(lags)} deliveries, p50 {p(.5):.0f} ms, p99 {p(.99):.0f} ms")
PY

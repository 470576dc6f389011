#!/usr/bin/env bash
# API ingest benchmark: events per second accepted by POST /v1/events/batch and by
# POST /v1/events (with validation, then SendMessageBatch / SendMessage-by-batch to SQS),
# against the raw SendMessageBatch rate of the same SDK from the same producers in the
# same run; and the API's CPU per event.
#
#   deployments/local/bench-api.sh            # N=20000 events per mode, RUNS=3
#   N=5000 RUNS=1 deployments/local/bench-api.sh
source "$(dirname "$0")/env.sh"
N=${N:-20000}
RUNS=${RUNS:-3}
CONCURRENCY=${CONCURRENCY:-8}

bench_setup bench-api
export DATABASE_URL="$server/ep_bench_api" RUST_LOG=warn
results="$out/results.jsonl"
: > "$results"
cpu_of() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rate_of() { grep -o '([0-9]*/s)' "$1" | tr -dc 0-9; }
api_pid=""
trap '[ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null || true' EXIT

psql "$server/postgres" -qc "DROP DATABASE IF EXISTS ep_bench_api WITH (FORCE)" -c "CREATE DATABASE ep_bench_api" >/dev/null
"$bin/processor" registry apply deployments/registry.json >/dev/null 2>&1

for run in $(seq 1 "$RUNS"); do
  queue=$("$VENV/bin/awslocal" sqs create-queue --queue-name "ep-bench-api-$(date +%s)-$run" --output text --query QueueUrl)
  export SQS_QUEUE_URL=$queue
  log "run $run/$RUNS: raw SendMessageBatch ($N valid events, $CONCURRENCY concurrent calls)"
  "$bin/producers" --count "$N" --rate 0 --concurrency "$CONCURRENCY" --seed "$run" --quiet >"$out/raw.txt"
  port=$(free_port)
  API_ADDR="127.0.0.1:$port" "$bin/api" >"$out/api.log" 2>&1 &
  api_pid=$!
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
  for mode in batch single; do
    log "run $run/$RUNS: through the API ($mode)"
    flag=""; [ "$mode" = batch ] && flag=--api-batch
    cpu0=$(cpu_of "$api_pid")
    "$bin/producers" --count "$N" --rate 0 --concurrency "$CONCURRENCY" --seed "$run" --quiet \
      --api-url "http://127.0.0.1:$port" $flag >"$out/$mode.txt"
    cpu1=$(cpu_of "$api_pid")
    echo "$(python3 -c "print(round(($cpu1 - $cpu0) * 1e6 / $N, 1))")" > "$out/$mode.cpu"
  done
  kill "$api_pid"; wait "$api_pid" 2>/dev/null || true; api_pid=""
  python3 - "$run" "$(rate_of "$out/raw.txt")" "$(rate_of "$out/batch.txt")" "$(rate_of "$out/single.txt")" \
    "$(cat "$out/batch.cpu")" "$(cat "$out/single.cpu")" >>"$results" <<'PY'
import json, sys
run, raw, batch, single, batch_cpu, single_cpu = sys.argv[1:]
raw, batch, single = float(raw), float(batch), float(single)
print(json.dumps({"run": int(run), "raw_per_s": raw, "api_batch_per_s": batch, "api_single_per_s": single,
                  "batch_ratio": round(batch / raw, 3), "single_ratio": round(single / raw, 3),
                  "api_cpu_us_batch": float(batch_cpu), "api_cpu_us_single": float(single_cpu)}))
PY
  tail -n 1 "$results"
done
python3 - "$results" <<'PY'
import json, sys, statistics
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = lambda k: statistics.median(r[k] for r in runs)
print(f"events/s: raw SendMessageBatch {med('raw_per_s'):.0f}, API batch {med('api_batch_per_s'):.0f} "
      f"(ratio {med('batch_ratio'):.3f}), API single {med('api_single_per_s'):.0f} (ratio {med('single_ratio'):.3f}); "
      f"API CPU per event: batch {med('api_cpu_us_batch'):.1f} us, single {med('api_cpu_us_single'):.1f} us "
      f"(median of {len(runs)})")
PY

#!/usr/bin/env bash
# Instruction counts: the processor against the raw SQS drain, under valgrind's callgrind.
#
# bench.sh's CPU ratio swings by 0.1-0.2 from run to run on a shared machine; a count of
# instructions does not, so it is the measure of a change. Per run, the same N messages
# (one seed for both queues) are preloaded into two fresh queues: the processor drains
# one under callgrind until the verifier sees every message settled, and `producers
# drain` (receive + delete only) drains the other under callgrind. One start-up of each
# binary is measured the same way (the processor on an empty queue, `drain --count 0`)
# and subtracted, so the figures are instructions per message of steady work.
#
#   deployments/local/bench-instructions.sh                    # N=3000, RUNS=3, demo
#   WORKLOAD=formats RUNS=5 deployments/local/bench-instructions.sh
#
# What it does not see: the kernel's share (bench.sh reports it as *_sys_us_per_msg),
# and the CPU's SHA extensions: under valgrind, SigV4's SHA-256 runs in software (about
# 35k instructions a message on both sides, 1% of the CPU natively), so the native ratio
# is higher than this one. quanta's clock calibration at the processor's start (a busy
# loop timed by the wall clock, so its count varies with valgrind's speed) is left out.
source "$(dirname "$0")/env.sh"
N=${N:-3000}
RUNS=${RUNS:-3}
workload_files
need valgrind valgrind
bench_setup bench-instructions
db="$server/ep_bench_instructions"
ls_log="$CACHE_DIR/localstack-$LOCALSTACK_PORT.log"
lines() { wc -l < "$ls_log"; }
calls_since() { # first-line operation: how many such SQS calls LocalStack served since then
  tail -n +"$(($1 + 1))" "$ls_log" | grep -c "AWS sqs\.$2" || true
}
# quanta's calibration is left out (see above). --collect-atstart must follow the toggle,
# which otherwise starts the run with collection off.
callgrind=(valgrind --tool=callgrind --toggle-collect='quanta::Clock::new' --collect-atstart=yes)
instructions() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }
processor_env=(DATABASE_URL="$db" PROCESSOR_STATS_INTERVAL_SECS=0 PROCESSOR_HTTP_ADDR=127.0.0.1:0 RUST_LOG=warn)
fresh_database() {
  psql "$server/postgres" -qc "DROP DATABASE IF EXISTS ep_bench_instructions WITH (FORCE)" \
    -c "CREATE DATABASE ep_bench_instructions" >/dev/null
  DATABASE_URL=$db "$bin/processor" registry apply "$registry" >/dev/null 2>&1
}

log "start-ups: the processor on an empty queue, and drain --count 0"
fresh_database
q_empty=$(aws sqs create-queue --queue-name "ep-instr-empty-$(date +%s)" --output text --query QueueUrl)
env "${processor_env[@]}" SQS_QUEUE_URL="$q_empty" "${callgrind[@]}" --callgrind-out-file="$out/startup-processor.out" \
  "$bin/processor" 2>/dev/null &
pid=$!
sleep 8 # under valgrind: connect, migrate, load the registry, make the first long polls
kill -INT "$pid"
wait "$pid" || true
SQS_QUEUE_URL=$q_empty "${callgrind[@]}" --callgrind-out-file="$out/startup-drain.out" "$bin/producers" drain --count 0 \
  >/dev/null 2>&1
aws sqs delete-queue --queue-url "$q_empty"
startup_processor=$(instructions "$out/startup-processor.out")
startup_drain=$(instructions "$out/startup-drain.out")

results="$out/results.jsonl"
: > "$results"
for run in $(seq 1 "$RUNS"); do
  log "run $run/$RUNS: $N messages of the $WORKLOAD mix, the same in two fresh queues"
  fresh_database
  stamp=$(date +%s)-$run
  q_proc=$(aws sqs create-queue --queue-name "ep-instr-proc-$stamp" --output text --query QueueUrl)
  q_drain=$(aws sqs create-queue --queue-name "ep-instr-drain-$stamp" --output text --query QueueUrl)
  for q in "$q_proc" "$q_drain"; do
    DATABASE_URL=$db SQS_QUEUE_URL=$q "$bin/producers" --count "$N" --rate 0 --concurrency 8 --clients 50 \
      --events-file "$events" --invalid-ratio 0.04 --duplicate-ratio 0.01 --seed "$run" \
      --manifest "$out/manifest-$(basename "$q").jsonl" --quiet >/dev/null 2>&1
  done

  log "run $run: processor under callgrind"
  mark=$(lines)
  env "${processor_env[@]}" SQS_QUEUE_URL="$q_proc" "${callgrind[@]}" --callgrind-out-file="$out/processor.out" \
    "$bin/processor" 2>/dev/null &
  pid=$!
  DATABASE_URL=$db SQS_QUEUE_URL=$q_proc "$bin/producers" verify --manifest "$out/manifest-$(basename "$q_proc").jsonl" \
    --wait-secs 900 --json > "$out/verify.json" || true
  kill -INT "$pid"
  wait "$pid" || true
  processor_calls="$(calls_since "$mark" ReceiveMessage) $(calls_since "$mark" DeleteMessageBatch)"

  log "run $run: raw drain under callgrind"
  mark=$(lines)
  SQS_QUEUE_URL=$q_drain "${callgrind[@]}" --callgrind-out-file="$out/drain.out" "$bin/producers" drain --count "$N" \
    --idle-secs 5 >/dev/null 2>&1
  drain_calls="$(calls_since "$mark" ReceiveMessage) $(calls_since "$mark" DeleteMessageBatch)"
  for q in "$q_proc" "$q_drain"; do aws sqs delete-queue --queue-url "$q"; done

  python3 - "$out" "$N" "$(instructions "$out/processor.out")" "$startup_processor" \
    "$(instructions "$out/drain.out")" "$startup_drain" "$processor_calls" "$drain_calls" >> "$results" <<'PY'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
processor, processor_startup, drain, drain_startup = map(int, sys.argv[3:7])
(p_receives, p_deletes), (d_receives, d_deletes) = (map(int, s.split()) for s in sys.argv[7:9])
verify = json.load(open(f"{out}/verify.json"))
per_message = (processor - processor_startup) / n, (drain - drain_startup) / n
print(json.dumps({
    "n": n, "processor_instructions_per_msg": round(per_message[0]), "drain_instructions_per_msg": round(per_message[1]),
    "instruction_ratio": round(per_message[0] / per_message[1], 3),
    "processor_receive_calls": p_receives, "processor_delete_calls": p_deletes,
    "drain_receive_calls": d_receives, "drain_delete_calls": d_deletes,
    "lost": verify["lost"], "duplicated": verify["duplicated"], "misclassified": verify["misclassified"],
}))
PY
  tail -n 1 "$results"
done

python3 - "$results" "$startup_processor" "$startup_drain" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
keys = ["processor_instructions_per_msg", "drain_instructions_per_msg", "instruction_ratio",
        "processor_delete_calls", "drain_delete_calls", "lost", "duplicated", "misclassified"]
median = {k: statistics.median(r[k] for r in runs) for k in keys}
print(f"\nmedians of {len(runs)} run(s), N={runs[0]['n']}; start-ups subtracted: "
      f"processor {int(sys.argv[2]) / 1e6:.1f}M, drain {int(sys.argv[3]) / 1e6:.1f}M instructions")
for k in keys:
    print(f"  {k:<32} {median[k]:>10}   runs: {[r[k] for r in runs]}")
print(json.dumps({"median": median, "runs": len(runs)}))
PY

#!/usr/bin/env bash
# End-to-end benchmark: the processor against the raw SQS drain rate, in one run.
#
# Per run: N messages (95% valid v2 events across 50 tenants, 4% bad input of every
# kind, 1% duplicates) are preloaded into a fresh queue, and N/2 into each of two more.
# The processor drains and stores the first; `producers drain` (receive + delete only,
# same SDK, receive requests and number of long polls) drains one half just before it and the other just
# after, so a change of the shared machine's speed during the run weighs on the ceiling
# as on the processor. Then, with the processor still running, producers send
# LATENCY_N more at half the measured drain rate, for SentTimestamp -> commit latency.
# Prints a table and one JSON line per run, then the medians.
#
#   deployments/local/bench.sh                # N=50000, RUNS=3
#   N=10000 RUNS=1 deployments/local/bench.sh
#   WORKLOAD=formats deployments/local/bench.sh   # schemas heavy in `format` and patterns
#
# Workloads: `demo` (deployments/registry.json and events.json) and `formats`
# (deployments/bench/: email, hostname, uri, uuid, ipv4/6, date-time and patterns, the
# way real event schemas use them).
source "$(dirname "$0")/env.sh"
N=${N:-50000}
RUNS=${RUNS:-3}
LATENCY_N=${LATENCY_N:-10000}
workload_files
need /usr/bin/time time
bench_setup bench
db="$server/ep_bench_e2e"
results="$out/results.jsonl"
: > "$results"
# LocalStack logs one line per request: the SQS requests served during each phase, per
# message (real SQS bills per request); the processor's phase includes the verifier's
# queue-depth reads.
ls_log="$CACHE_DIR/localstack-$LOCALSTACK_PORT.log"
lines() { wc -l < "$ls_log"; }
requests_since() { # first-line name: counts by operation, as JSON
  tail -n +"$(($1 + 1))" "$ls_log" | python3 -c '
import collections, json, re, sys
print(json.dumps(collections.Counter(re.findall(r"AWS sqs\.(\w+)", sys.stdin.read()))))' > "$out/requests-$2.json"
}

for run in $(seq 1 "$RUNS"); do
  log "run $run/$RUNS: preparing $N messages for the processor, $N for the drain, in fresh queues"
  psql "$server/postgres" -qc "DROP DATABASE IF EXISTS ep_bench_e2e WITH (FORCE)" -c "CREATE DATABASE ep_bench_e2e" >/dev/null
  DATABASE_URL=$db "$bin/processor" registry apply "$registry" >/dev/null 2>&1
  stamp=$(date +%s)-$run
  q_proc=$(aws sqs create-queue --queue-name "ep-bench-proc-$stamp" --output text --query QueueUrl)
  q_before=$(aws sqs create-queue --queue-name "ep-bench-drain-a-$stamp" --output text --query QueueUrl)
  q_after=$(aws sqs create-queue --queue-name "ep-bench-drain-b-$stamp" --output text --query QueueUrl)
  preload() { # queue count seed
    DATABASE_URL=$db SQS_QUEUE_URL=$1 "$bin/producers" --count "$2" --rate 0 --concurrency 8 --clients 50 --events-file "$events" \
      --invalid-ratio 0.04 --duplicate-ratio 0.01 --seed "$3" --manifest "$out/manifest-$(basename "$1").jsonl" --quiet >/dev/null 2>&1
  }
  preload "$q_proc" "$N" "$run"
  preload "$q_before" "$((N / 2))" "$((run + 200))"
  preload "$q_after" "$((N - N / 2))" "$((run + 300))"
  drain() { # queue count name
    SQS_QUEUE_URL=$1 /usr/bin/time -f '%U %S %M' -o "$out/drain-$3.time" \
      "$bin/producers" drain --count "$2" --idle-secs 5 > "$out/drain-$3.json"
  }

  log "run $run: raw drain of the first half (receive + delete)"
  mark_line=$(lines)
  drain "$q_before" "$((N / 2))" before
  requests_since "$mark_line" drain-before

  log "run $run: processor"
  mark_line=$(lines)
  DATABASE_URL=$db SQS_QUEUE_URL=$q_proc PROCESSOR_STATS_INTERVAL_SECS=0 PROCESSOR_HTTP_ADDR=127.0.0.1:0 RUST_LOG=warn \
    /usr/bin/time -f '%U %S %M' -o "$out/processor.time" "$bin/processor" &
  pid=$!
  DATABASE_URL=$db SQS_QUEUE_URL=$q_proc "$bin/producers" verify --manifest "$out/manifest-$(basename "$q_proc").jsonl" --wait-secs 600 --json > "$out/verify.json" || true
  # The processor's CPU for the drain phase alone, from the OS (the latency phase runs
  # at half rate, with emptier receives).
  child=$(pgrep -P "$pid")
  read -r utime stime < <(awk '{print $14, $15}' "/proc/$child/stat")
  echo "$utime $stime $(getconf CLK_TCK)" > "$out/processor-drain.cpu"
  requests_since "$mark_line" processor
  log "run $run: raw drain of the second half"
  mark_line=$(lines)
  drain "$q_after" "$((N - N / 2))" after
  requests_since "$mark_line" drain-after
  # The ceiling is both halves together: messages over seconds, CPU over messages, less
  # one start-up of the drain (the CPU of `drain --count 0`, median of 3), so that each
  # side pays for one start-up, as the processor does.
  SQS_QUEUE_URL=$q_after python3 - "$out" "$bin/producers" <<'PY'
import json, resource, statistics, subprocess, sys
out, producers = sys.argv[1], sys.argv[2]
def cpu_of(command):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
startup = statistics.median(cpu_of([producers, "drain", "--count", "0"]) for _ in range(3))
halves = [json.load(open(f"{out}/drain-{h}.json")) for h in ("before", "after")]
times = [open(f"{out}/drain-{h}.time").read().split()[-3:] for h in ("before", "after")]
deleted, seconds = sum(h["deleted"] for h in halves), sum(h["seconds"] for h in halves)
json.dump({"deleted": deleted, "seconds": seconds, "per_second": deleted / seconds, "startup_cpu_s": startup,
           "halves_per_second": [round(h["per_second"]) for h in halves]}, open(f"{out}/drain.json", "w"))
user, system = sum(float(t[0]) for t in times), sum(float(t[1]) for t in times)
open(f"{out}/drain.time", "w").write(f"{user - startup} {system} {max(int(t[2]) for t in times)}")
PY
  drain_rate=$(python3 -c "import json;print(json.load(open('$out/drain.json'))['per_second'])")
  latency_rate=$(python3 -c "print(max(1, int($drain_rate / 2)))")
  log "run $run: latency at $latency_rate/s (half the drain rate)"
  mark=$(psql "$db" -Atc "SELECT now()")
  DATABASE_URL=$db SQS_QUEUE_URL=$q_proc "$bin/producers" --count "$LATENCY_N" --rate "$latency_rate" --concurrency 8 \
    --clients 50 --events-file "$events" --seed "$((run + 100))" --manifest "$out/latency.jsonl" --quiet >/dev/null 2>&1
  DATABASE_URL=$db SQS_QUEUE_URL=$q_proc "$bin/producers" verify --manifest "$out/latency.jsonl" --wait-secs 120 --json > "$out/verify-latency.json" || true
  # `time` does not forward signals: stop its child.
  pkill -TERM -P "$pid"; wait "$pid" || true
  # A process's CPU from the OS (user + sys), its peak RSS, and the database's timestamps:
  # received_at is set on receive, stored_at is the committing transaction's time.
  psql "$db" -AtF ' ' -c "
    WITH rows AS (SELECT received_at, stored_at, sent_at FROM message UNION ALL
                  SELECT received_at, stored_at, sent_at FROM rejected_message)
    SELECT count(*) FILTER (WHERE received_at < '$mark'),
           extract(epoch FROM max(stored_at) FILTER (WHERE received_at < '$mark') - min(received_at)),
           1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - sent_at)) FILTER (WHERE received_at >= '$mark'),
           1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - sent_at)) FILTER (WHERE received_at >= '$mark'),
           (SELECT count(*) FROM message), (SELECT count(*) FROM rejected_message)
    FROM rows" > "$out/db.txt"
  python3 - "$out" "$N" "$LATENCY_N" >> "$results" <<'PY'
import json, sys
out, n, latency_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pu, ps, prss = open(f"{out}/processor.time").read().split()[-3:]
du, ds, drss = open(f"{out}/drain.time").read().split()[-3:]
rows, seconds, p50, p99, stored, rejected = open(f"{out}/db.txt").read().split()
drain = json.load(open(f"{out}/drain.json"))
verify = json.load(open(f"{out}/verify.json"))
verify_latency = json.load(open(f"{out}/verify-latency.json"))
proc_rate = n / float(seconds)  # every message, duplicates included, as the drain counts
ut, st, hz = open(f"{out}/processor-drain.cpu").read().split()
proc_cpu_us = (int(ut) + int(st)) / int(hz) * 1e6 / n
drain_cpu_us = (float(du) + float(ds)) * 1e6 / drain["deleted"]
requests = {side: json.load(open(f"{out}/requests-{side}.json")) for side in ("processor", "drain-before", "drain-after")}
drain_requests = {op: requests["drain-before"].get(op, 0) + requests["drain-after"].get(op, 0)
                  for op in set(requests["drain-before"]) | set(requests["drain-after"])}
print(json.dumps({
    "n": n, "processor_msgs_per_s": round(proc_rate), "drain_msgs_per_s": round(drain["per_second"]),
    "drain_halves_msgs_per_s": drain["halves_per_second"], "drain_startup_cpu_ms": round(drain["startup_cpu_s"] * 1e3, 1),
    "throughput_ratio": round(proc_rate / drain["per_second"], 3),
    "processor_cpu_us_per_msg": round(proc_cpu_us, 1), "drain_cpu_us_per_msg": round(drain_cpu_us, 1),
    "cpu_ratio": round(proc_cpu_us / drain_cpu_us, 3),
    # The kernel's share (syscalls, wake-ups), which instruction counts do not see.
    "processor_sys_us_per_msg": round(int(st) / int(hz) * 1e6 / n, 1),
    "drain_sys_us_per_msg": round(float(ds) * 1e6 / drain["deleted"], 1),
    "processor_sqs_requests_per_msg": round(sum(requests["processor"].values()) / n, 4),
    "drain_sqs_requests_per_msg": round(sum(drain_requests.values()) / drain["deleted"], 4),
    "processor_sqs_requests": requests["processor"], "drain_sqs_requests": drain_requests,
    "processor_peak_rss_mib": round(int(prss) / 1024, 1), "drain_peak_rss_mib": round(int(drss) / 1024, 1),
    "latency_p50_ms": round(float(p50), 1), "latency_p99_ms": round(float(p99), 1),
    "stored": int(stored), "rejected": int(rejected),
    "expected_stored": verify["expected_stored"] + verify_latency["expected_stored"],
    "expected_rejected": verify["expected_rejected"] + verify_latency["expected_rejected"],
    "lost": verify["lost"] + verify_latency["lost"], "duplicated": verify["duplicated"] + verify_latency["duplicated"],
    "misclassified": verify["misclassified"] + verify_latency["misclassified"],
}))
PY
  tail -n 1 "$results"
  for q in "$q_proc" "$q_before" "$q_after"; do aws sqs delete-queue --queue-url "$q"; done
done

python3 - "$results" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
keys = ["processor_msgs_per_s", "drain_msgs_per_s", "throughput_ratio", "processor_cpu_us_per_msg",
        "drain_cpu_us_per_msg", "cpu_ratio", "processor_sys_us_per_msg", "drain_sys_us_per_msg",
        "processor_sqs_requests_per_msg", "drain_sqs_requests_per_msg",
        "processor_peak_rss_mib", "latency_p50_ms", "latency_p99_ms",
        "lost", "duplicated", "misclassified"]
median = {k: statistics.median(r[k] for r in runs) for k in keys}
print(f"\nmedians of {len(runs)} run(s), N={runs[0]['n']}")
for k in keys:
    print(f"  {k:<28} {median[k]:>10}   runs: {[r[k] for r in runs]}")
checks = all(r["stored"] == r["expected_stored"] and r["rejected"] == r["expected_rejected"] for r in runs)
print(f"  counts match expectations     {checks}")
print(json.dumps({"median": median, "runs": len(runs), "counts_ok": checks}))
PY

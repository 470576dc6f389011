#!/usr/bin/env bash
# Where the processor's CPU goes, by part of the pipeline: `perf` samples the processor
# (with DWARF call graphs, so async stacks unwind) while it drains N preloaded messages
# of the benchmark's mix, and each sample is put in the outermost part on its stack:
# the AWS SDK, classify, PostgreSQL, settling, polling, or the rest (the runtime,
# epoll, context switches, start-up). Kernel time spent for a part counts to it.
#
#   deployments/local/profile.sh                      # N=20000, demo
#   WORKLOAD=formats deployments/local/profile.sh
source "$(dirname "$0")/env.sh"
N=${N:-20000}
FREQUENCY=${FREQUENCY:-2999}
workload_files
need perf linux-perf
bench_setup profile
db="$server/ep_profile"
psql "$server/postgres" -qc "DROP DATABASE IF EXISTS ep_profile WITH (FORCE)" -c "CREATE DATABASE ep_profile" >/dev/null
DATABASE_URL=$db "$bin/processor" registry apply "$registry" >/dev/null 2>&1
queue=$(aws sqs create-queue --queue-name "ep-profile-$(date +%s)" --output text --query QueueUrl)
log "preloading $N messages of the $WORKLOAD mix"
DATABASE_URL=$db SQS_QUEUE_URL=$queue "$bin/producers" --count "$N" --rate 0 --concurrency 8 --clients 50 \
  --events-file "$events" --invalid-ratio 0.04 --duplicate-ratio 0.01 --seed 7 --manifest "$out/manifest.jsonl" \
  --quiet >/dev/null 2>&1
log "processor under perf until every message is settled"
DATABASE_URL=$db SQS_QUEUE_URL=$queue PROCESSOR_STATS_INTERVAL_SECS=0 PROCESSOR_HTTP_ADDR=127.0.0.1:0 RUST_LOG=warn \
  perf record -q -F "$FREQUENCY" --call-graph dwarf,16384 -o "$out/perf.data" "$bin/processor" 2>/dev/null &
pid=$!
DATABASE_URL=$db SQS_QUEUE_URL=$queue "$bin/producers" verify --manifest "$out/manifest.jsonl" --wait-secs 900 --json \
  > "$out/verify.json" || true
kill -INT "$pid" # perf passes the signal on to the processor
wait "$pid" || true
aws sqs delete-queue --queue-url "$queue"
perf script -i "$out/perf.data" -F ip,sym 2>/dev/null | python3 -c '
import re, sys
# First match wins, in this order: a sample under classify that also has the SDK
# below it on the stack (the poller calls both) is classify.
parts = [
    ("classify", r"validation::classify"),
    ("PostgreSQL", r"tokio_postgres::|commit_batch|try_commit|insert_batch"),
    ("AWS SDK: receive, delete, signing, HTTP", r"aws_smithy|aws_sdk|aws_sigv4|hyper"),
    ("settling beyond commit and delete", r"ingest::settle"),
    ("polling beyond receive", r"ingest::receive"),
]
counts = {name: 0 for name, _ in parts}
counts["the rest: runtime, epoll, context switches, start-up"] = 0
total = 0
for stack in sys.stdin.read().split("\n\n"):
    if not stack.strip():
        continue
    total += 1
    part = next((name for name, pattern in parts if re.search(pattern, stack)), None)
    counts[part or "the rest: runtime, epoll, context switches, start-up"] += 1
print(f"{total} samples")
for name, n in sorted(counts.items(), key=lambda item: -item[1]):
    print(f"  {100 * n / max(total, 1):5.1f}%  {name}")
'
python3 -c "import json,sys; v=json.load(open(sys.argv[1])); print(f\"lost {v['lost']}, duplicated {v['duplicated']}, misclassified {v['misclassified']}\")" "$out/verify.json"

#!/usr/bin/env bash
# The whole test suite: starts the local services (idempotently), runs the unit and
# integration tests (real LocalStack and PostgreSQL) and the benchmarks once as tests,
# the fault-injection suite, then the README's run command once.
source "$(dirname "$0")/env.sh"
here=$(cd "$(dirname "$0")" && pwd)

"$here/start.sh"
"$here/check-deployments.sh"   # manifests, compose file, Dockerfile, alert rules: offline
cd "$ROOT"
cargo test --release --all-targets
"$here/faults.sh"
EVENTS=2000 "$here/run.sh" --once

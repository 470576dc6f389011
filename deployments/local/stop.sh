#!/usr/bin/env bash
# Stops what the local scripts started (by recorded PID): a processor left running by
# run.sh, LocalStack, and the private PostgreSQL cluster. A PostgreSQL that was already
# running before is left alone.
source "$(dirname "$0")/env.sh"
here=$(dirname "$0")

for pid_file in "$RUN_DIR"/processor-*.pid; do
  [ -f "$pid_file" ] || continue
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then log "stopping processor (pid $pid)"; kill -TERM "$pid" || true; fi
  rm -f "$pid_file"
done
"$here/localstack.sh" stop
"$here/postgres.sh" stop

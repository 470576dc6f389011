#!/usr/bin/env bash
# The scrape check: runs Prometheus (Debian's package, loopback only, its own storage
# under the cache directory) against the processor, the sender and the API that are
# running now, and checks that every series the alert rules, the Grafana dashboard and
# the sender's KEDA scaler use exists with the labels they group by, that every rule
# evaluates, and that the metric names follow Prometheus' conventions. run.sh --once
# calls it while its services are up (so the test command runs it); run it by hand
# beside a running `run.sh` too. Prometheus is stopped again when it ends.
#
# PROMETHEUS_CHECK_ADDR (default 127.0.0.1:9095) is where this Prometheus listens; not
# 9090, which is the processor's.
source "$(dirname "$0")/env.sh"
here=$(cd "$(dirname "$0")" && pwd)
source "$here/tools.sh"
addr=${PROMETHEUS_CHECK_ADDR:-127.0.0.1:9095}
case "$addr" in 127.*|localhost:*|\[::1\]:*) ;; *) die "PROMETHEUS_CHECK_ADDR must be a loopback address, not $addr" ;; esac
dir="$CACHE_DIR/prometheus-check"
rm -rf "$dir" && mkdir -p "$dir/data"

config=$("$TOOLS_PY" "$here/check_metrics.py" --write-config "$dir")
curl -s -o /dev/null --max-time 1 "http://$addr/" && die "something already listens on $addr (set PROMETHEUS_CHECK_ADDR)"
log "scrape check: Prometheus on $addr against the processor ($PROCESSOR_HTTP_ADDR), sender ($SENDER_HTTP_ADDR) and API ($API_ADDR)"
prometheus --config.file="$config" --storage.tsdb.path="$dir/data" --web.listen-address="$addr" \
  --storage.tsdb.retention.time=1h >"$dir/prometheus.log" 2>&1 &
pid=$!
echo "$pid" > "$RUN_DIR/prometheus-check-$pid.pid"
stop() { kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -f "$RUN_DIR/prometheus-check-$pid.pid"; }
trap stop EXIT
for _ in $(seq 1 60); do
  curl -sf --max-time 1 "http://$addr/-/ready" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/prometheus.log" >&2; die "Prometheus did not start"; }
  sleep 0.5
done
# A few scrapes and rule evaluations (1 s apart), then the checks; series that are
# refreshed every 5-15 s get up to WAIT seconds more.
sleep 5
"$TOOLS_PY" "$here/check_metrics.py" --prometheus "http://$addr" "${PROMETHEUS_CHECK_WAIT:-45}" \
  || die "scrape check failed (see the FAIL lines; Prometheus' log: $dir/prometheus.log)"

#!/usr/bin/env bash
# Runs LocalStack (SQS only) as a plain Python process, without docker.
#
#   localstack.sh start   install into a virtual environment in the cache directory
#                         when needed, start it unless it already answers, wait for SQS
#   localstack.sh stop    stop it, if these scripts started it
#
# Pins: localstack-core 4.13.1 is the newest that runs on Python 3.11; the `localstack`
# CLI needs an account, so the runtime's module is started directly.
source "$(dirname "$0")/env.sh"

requirements="$ROOT/deployments/local/localstack-requirements.txt"
pid_file="$RUN_DIR/localstack-$LOCALSTACK_PORT.pid"
log_file="$CACHE_DIR/localstack-$LOCALSTACK_PORT.log"

healthy() {
  curl -fsS --max-time 2 "$LOCALSTACK_URL/_localstack/health" 2>/dev/null \
    | grep -Eq '"sqs": *"(running|available)"'
}

install() {
  local stamp="$VENV/.requirements.sha256" want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  local python=${PYTHON:-}
  if [ -z "$python" ]; then
    for candidate in python3.11 python3; do
      if command -v "$candidate" >/dev/null; then python=$candidate; break; fi
    done
  fi
  [ -n "$python" ] || die "Python 3.11 is needed for LocalStack; install python3"
  log "installing LocalStack into $VENV (about 30 s, once)"
  rm -rf "$VENV"
  if ! "$python" -m venv "$VENV" 2>/dev/null; then
    [ "$(id -u)" = 0 ] || die "python venv is missing; run: sudo apt-get install -y python3-venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$VENV" && "$python" -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
}

# LocalStack is Python: its request threads take turns holding the GIL, and handing it
# between threads on different cores is slow. Kept on one core (the last one;
# LOCALSTACK_CPU=N picks another, LOCALSTACK_CPU=none leaves it free), the raw SQS drain
# ran here at about 3,700 messages/s instead of 2,600, and it no longer slows down when
# PostgreSQL and the processor want the other core.
pinned=()
allowed=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status 2>/dev/null)
if [ "${LOCALSTACK_CPU:=$(grep -oE '[0-9]+' <<<"$allowed" | tail -n 1)}" != none ] && [ "$(nproc)" -gt 1 ] \
  && command -v taskset >/dev/null; then
  [[ "$LOCALSTACK_CPU" =~ ^[0-9]+$ ]] && taskset -c "$LOCALSTACK_CPU" true 2>/dev/null \
    || die "LOCALSTACK_CPU: expected one of the CPUs this machine lets us use ($allowed), or none; got '$LOCALSTACK_CPU'"
  pinned=(taskset -c "$LOCALSTACK_CPU")
fi

start() {
  if healthy; then
    # Started earlier by these scripts: pinned as it would be now (a no-op if it is).
    if [ ${#pinned[@]} -gt 0 ] && [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      taskset -a -p -c "$LOCALSTACK_CPU" "$(cat "$pid_file")" >/dev/null
    fi
    return 0
  fi
  install
  log "starting LocalStack on $LOCALSTACK_URL (log: $log_file)"
  mkdir -p "$CACHE_DIR/localstack-$LOCALSTACK_PORT"
  OVERRIDE_IN_DOCKER=0 SERVICES=sqs EAGER_SERVICE_LOADING=1 \
    GATEWAY_LISTEN="127.0.0.1:$LOCALSTACK_PORT" LOCALSTACK_HOST="127.0.0.1:$LOCALSTACK_PORT" \
    SQS_ENDPOINT_STRATEGY=path FILESYSTEM_ROOT="$CACHE_DIR/localstack-$LOCALSTACK_PORT" \
    DISABLE_EVENTS=1 SKIP_INFRA_DOWNLOADS=1 \
    setsid nohup "${pinned[@]}" "$VENV/bin/python" -m localstack.runtime.main >"$log_file" 2>&1 </dev/null &
  echo $! > "$pid_file"
  for _ in $(seq 1 120); do
    if healthy; then return 0; fi
    kill -0 "$(cat "$pid_file")" 2>/dev/null || { tail -n 20 "$log_file" >&2; die "LocalStack exited; see $log_file"; }
    sleep 0.5
  done
  die "LocalStack did not report SQS ready within 60 s; see $log_file"
}

stop() {
  [ -f "$pid_file" ] || return 0
  local pid; pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping LocalStack (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: localstack.sh start|stop" ;;
esac

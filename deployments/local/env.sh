# Shared by the local scripts: settings, paths and helpers. Source it; do not run it.
#
# Settings come from the environment first, then `.env`, then `.env-template`,
# so the scripts and both binaries agree on every value.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE_DIR=${EVENT_PROCESSOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/event-processor}
RUN_DIR="$CACHE_DIR/run"        # PID files of what these scripts started
VENV="$CACHE_DIR/localstack-venv"
mkdir -p "$RUN_DIR"

# Sets KEY=VALUE lines of a dotenv file that the environment does not set already.
load_defaults() {
  local file=$1 line key
  [ -f "$file" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    key=${line%%=*}
    if [ -z "${!key+x}" ]; then export "$key=${line#*=}"; fi
  done < "$file"
}
load_defaults "$ROOT/.env"
load_defaults "$ROOT/.env-template"

export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-$AWS_REGION}
# awslocal still works; its deprecation banner would drown our own output.
export DISABLE_DEPRECATION_NOTICE=1
# LocalStack's port comes from the endpoint URL.
LOCALSTACK_PORT=$(sed -E 's#^[a-z]+://[^:/]+:?([0-9]*).*#\1#' <<<"${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}")
LOCALSTACK_PORT=${LOCALSTACK_PORT:-4566}
LOCALSTACK_URL="http://127.0.0.1:$LOCALSTACK_PORT"
# awslocal reads these to find LocalStack.
export LOCALSTACK_HOST="127.0.0.1:$LOCALSTACK_PORT" AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-$LOCALSTACK_URL}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# awslocal, from the virtualenv localstack.sh installs it into.
aws() { "$VENV/bin/awslocal" "$@"; }

# A command a script needs: installed from Debian's packages when missing (as root), or
# the script stops naming the package.
need() { # command package
  command -v "$1" >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq "$2" >/dev/null; } \
    || die "$1 is needed: apt-get install $2"
}

# What every benchmark starts with: the local services up and the release binaries
# built, in the repository's root, with `bin` (the binaries), `out` ($CACHE_DIR/NAME,
# the benchmark's own folder) and `server` (PostgreSQL's URL without a database) set.
bench_setup() { # NAME
  "$ROOT/deployments/local/start.sh" >/dev/null 2>&1
  cd "$ROOT"
  cargo build --release --bins --quiet
  bin="$ROOT/target/release"
  out="$CACHE_DIR/$1"
  mkdir -p "$out"
  server=${DATABASE_URL%/*}
}

# The benchmarks' workloads (WORKLOAD=demo, the default, or formats): sets `registry`
# and `events`, the registry file and the event templates, relative to the repository.
workload_files() {
  case "${WORKLOAD:=demo}" in
    demo) registry=deployments/registry.json events=deployments/events.json ;;
    formats) registry=deployments/bench/formats-registry.json events=deployments/bench/formats-events.json ;;
    *) die "WORKLOAD: expected demo or formats, got '$WORKLOAD'" ;;
  esac
}

#!/usr/bin/env bash
# Runs the README's API examples (the ```sh block after "<!-- api-examples -->") against
# the running API, so the README's commands stay true. Used by run.sh; fails on the
# first command that fails (curl -f turns an HTTP error into a failure).
source "$(dirname "$0")/env.sh"
block=$(awk '/<!-- api-examples -->/{found=1; next} found && /^```sh/{inside=1; next} inside && /^```/{exit} inside{print}' "$ROOT/README.md")
[ -n "$block" ] || die "README.md has no API example block"
log "running the README's API examples"
bash -euo pipefail -c "$block"

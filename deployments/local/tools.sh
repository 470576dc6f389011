# Installs, idempotently, the tools that check deployments/ without docker or a
# cluster. Source it after env.sh; it defines TOOLS_PY and puts promtool, prometheus
# and docker-compose on the PATH.
#   kubernetes-validate, jsonschema, PyYAML   pip, into $CACHE_DIR/tools-venv
#   promtool, prometheus                      Debian's `prometheus` package
#   docker-compose                            Debian's `docker-compose` package (no daemon needed)
TOOLS_VENV="$CACHE_DIR/tools-venv"
TOOLS_PY="$TOOLS_VENV/bin/python"

install_tools() {
  local requirements="$ROOT/deployments/local/tools-requirements.txt" stamp="$TOOLS_VENV/.requirements.sha256" want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if ! [ -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing the deployment checkers into $TOOLS_VENV (once)"
    rm -rf "$TOOLS_VENV"
    python3 -m venv "$TOOLS_VENV" || die "python3 -m venv failed; install python3-venv"
    "$TOOLS_VENV/bin/pip" install -q --disable-pip-version-check -r "$requirements"
    echo "$want" > "$stamp"
  fi
  local packages=()
  command -v promtool >/dev/null && command -v prometheus >/dev/null || packages+=(prometheus)
  command -v docker-compose >/dev/null || packages+=(docker-compose)
  if [ ${#packages[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${packages[*]}; run: sudo apt-get install -y --no-install-recommends ${packages[*]}"
    log "installing ${packages[*]} (Debian packages)"
    # The package's own Prometheus service must not start: it would take port 9090,
    # which is the processor's. policy-rc.d 101 tells the maintainer scripts not to
    # start services; ours is removed again afterwards (an existing one is kept).
    local policy=/usr/sbin/policy-rc.d added=false
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && added=true; fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    if $added; then rm -f "$policy"; fi
  fi
}
install_tools

#!/usr/bin/env bash
# Debian packages the test suite and the benchmarks drive for real, installed only where missing:
#   chromium                 -> /usr/bin/chromium        (browser tests)
#   prometheus               -> /usr/bin/promtool, /usr/bin/prometheus
#   prometheus-alertmanager  -> /usr/bin/amtool, /usr/bin/prometheus-alertmanager
#   fonts-liberation, fonts-dejavu-core -> fonts Chromium renders Latin and Arabic pages with
#   jq                       -> /usr/bin/jq              (the docs' runnable examples: tests/docs)
#   wrk                      -> /usr/bin/wrk             (the closed-loop load of bench/)
#   nodejs, npm              -> node, npm (only when no npm is on the PATH: the type-check of
#                               the docs' client examples, tests/docs; a NodeSource Node.js counts)
#
# Idempotent and silent when everything is present. Installing never leaves Debian's
# prometheus / alertmanager / node-exporter daemons running: a temporary policy-rc.d
# denies every service start during the install, and services this run installed are
# disabled at boot. Usage: `make system-deps` (or `sudo bash ops/install-system-deps.sh`).
set -euo pipefail

# package -> file that proves it is installed
declare -A PROVIDES=(
    [chromium]=/usr/bin/chromium
    [prometheus]=/usr/bin/promtool
    [prometheus-alertmanager]=/usr/bin/amtool
    [fonts-liberation]=/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf
    [fonts-dejavu-core]=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
    [jq]=/usr/bin/jq
    [wrk]=/usr/bin/wrk
)
ORDER=(chromium prometheus prometheus-alertmanager fonts-liberation fonts-dejavu-core jq wrk)
# Debian service names these packages ship (prometheus recommends node-exporter; we skip
# recommends, but an older install may have it).
SERVICES=(prometheus prometheus-alertmanager prometheus-node-exporter)

installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]] \
        && [[ -e "${PROVIDES[$1]}" ]]
}

missing=()
for pkg in "${ORDER[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
# Node.js may come from elsewhere than Debian (NodeSource bundles npm): look for the commands.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $EUID -ne 0 ]]; then
    echo "install-system-deps: missing Debian packages: ${missing[*]}; install them as root:" \
        "sudo apt-get install --no-install-recommends ${missing[*]}  (or: sudo make system-deps)" >&2
    exit 1
fi

echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive

# Forbid invoke-rc.d from starting daemons (prometheus on :9090, alertmanager on :9093,
# node-exporter on :9100) while the packages are configured. Keep an existing policy
# (Docker images ship one) untouched; remove only the one we created.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
    if [[ $created_policy -eq 1 ]]; then rm -f "$POLICY"; fi
}
trap cleanup EXIT
if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\n# temporary, from ops/install-system-deps.sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    created_policy=1
fi

services_before=()
for svc in "${SERVICES[@]}"; do
    [[ -e /etc/init.d/$svc || -e /lib/systemd/system/$svc.service ]] && services_before+=("$svc")
done

apt_opts=(-q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
log=$(mktemp /tmp/install-system-deps.XXXXXX.log)
if ! { apt-get "${apt_opts[@]}" update \
    && apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "install-system-deps: apt-get failed (full log: $log)" >&2
    exit 1
fi
rm -f "$log"

# Services installed by this run: stop (in case something started them anyway) and keep
# them from starting at boot. A pre-existing, operator-managed service is left alone.
for svc in "${SERVICES[@]}"; do
    [[ " ${services_before[*]} " == *" $svc "* ]] && continue
    [[ -e /etc/init.d/$svc || -e /lib/systemd/system/$svc.service ]] || continue
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    else
        if [[ -x /etc/init.d/$svc ]]; then "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; fi
        update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
done

still_missing=()
for pkg in "${ORDER[@]}"; do
    installed "$pkg" || still_missing+=("$pkg")
done
command -v npm >/dev/null 2>&1 || still_missing+=(npm)
if [[ ${#still_missing[@]} -ne 0 ]]; then
    echo "install-system-deps: still missing after apt-get: ${still_missing[*]}" >&2
    exit 1
fi
if command -v ss >/dev/null && ss -ltnpH '( sport = :9090 or sport = :9093 or sport = :9100 )' \
    | grep -qE 'prometheus|alertmanager|node_exporter'; then
    echo "install-system-deps: warning: a Debian prometheus/alertmanager daemon is listening:" >&2
    ss -ltnp '( sport = :9090 or sport = :9093 or sport = :9100 )' >&2
fi
echo "install-system-deps: done"

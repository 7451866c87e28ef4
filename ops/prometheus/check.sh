#!/usr/bin/env bash
# Validate the Prometheus/Alertmanager files in this directory; one line per check, non-zero
# exit if any fails. Needs promtool and amtool (`make system-deps` installs them). Run from
# anywhere: `bash ops/prometheus/check.sh` (or `make ops-check`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

for tool in promtool amtool; do
    if ! command -v "$tool" >/dev/null; then
        echo "FAIL  $tool not found: run \`make system-deps\`" >&2
        exit 1
    fi
done

failed=0
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "ok    $name"
    else
        echo "FAIL  $name"
        printf '%s\n' "$out" | sed 's/^/      /'
        failed=1
    fi
}

check "promtool check config prometheus.yml" promtool check config prometheus.yml
check "promtool check rules alerts.yml" promtool check rules alerts.yml
check "promtool test rules alerts_test.yml" promtool test rules alerts_test.yml
check "amtool check-config alertmanager.yml" amtool check-config alertmanager.yml
exit "$failed"

#!/bin/sh
# Start one program of the exams set under supervisor (or by hand), from the checkout.
#
#   exams-run.sh web|worker|scheduler [options of the exams command...]
#
# - Runs from the checkout this script lives in (ops/supervisor/ -> ../..), so `.env`
#   there is read by every program and supervisor needs no `directory=`.
# - Exports PROMETHEUS_MULTIPROC_DIR (from the environment, else from .env, else
#   <checkout>/var/prometheus) so web, worker and scheduler share one metrics directory:
#   prometheus_client only reads it from the process environment, never from .env.
# - Wipes that directory only when none of the set is running (a cold start of the whole
#   set, as prometheus_client asks). Restarting one program keeps every file: wiping
#   under a running web app would make it write into deleted files, and dropping a dead
#   worker's files would make the summed counters go backwards.
# - Then execs `exams`, so supervisor's signals reach the real process (for the worker,
#   `exams worker` execs Dramatiq's master in turn: same pid all the way down).
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
EXAMS_HOME=$(dirname -- "$(dirname -- "$here")")
cd "$EXAMS_HOME"

usage() {
    echo "usage: $0 web|worker|scheduler [options]" >&2
    exit 64
}
[ $# -ge 1 ] || usage
role=$1
shift
case $role in
    web) set -- serve "$@" ;;
    worker | scheduler) set -- "$role" "$@" ;;
    *) usage ;;
esac

if [ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ] && [ -f .env ]; then
    # Read .env with the parser the product's settings use (python-dotenv), quotes and all.
    PROMETHEUS_MULTIPROC_DIR=$("$EXAMS_HOME/.venv/bin/python" -c \
        'from dotenv import dotenv_values; print(dotenv_values(".env").get("PROMETHEUS_MULTIPROC_DIR") or "")')
fi
PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-$EXAMS_HOME/var/prometheus}
export PROMETHEUS_MULTIPROC_DIR
# Log lines reach supervisor's log file as they are written.
export PYTHONUNBUFFERED=1

dir=$PROMETHEUS_MULTIPROC_DIR
mkdir -p "$dir/.pids"
# Serialise the check-and-wipe: programs started in the same instant see each other's pid.
exec 9>"$dir/.lock"
flock 9
running=0
for pidfile in "$dir"/.pids/*; do
    [ -f "$pidfile" ] || continue
    pid=${pidfile##*/}
    if [ -d "/proc/$pid" ]; then
        running=$((running + 1))
    else
        rm -f "$pidfile"
    fi
done
if [ "$running" -eq 0 ]; then
    # Cold start of the whole set: old values belong to processes that no longer exist.
    find "$dir" -maxdepth 1 -type f -name '*.db' -delete
fi
# This shell's pid is the pid of the program after exec (and of Dramatiq's master).
: >"$dir/.pids/$$"
exec 9>&-

exec "$EXAMS_HOME/.venv/bin/exams" "$@"

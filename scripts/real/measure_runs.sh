#!/usr/bin/env bash
# Measures every finished run under a folder with more measurements (those the plain
# `train --measure` leaves out, e.g. adaptive_sharpness and pac_bayes), N runs at once;
# a run that already holds <kind>.json is left alone (FORCE=1 measures it again).
#
# Usage:   scripts/real/measure_runs.sh DOMAIN FOLDER KIND[,KIND...] [--jobs N] [-- key=value ...]
#          e.g. scripts/real/measure_runs.sh graph runs/real/graph adaptive_sharpness,pac_bayes
# Output:  <run>/<kind>.json in every run directory; a log per run and kind in
#          FOLDER/logs/measure/.
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,10p' "$0" >&2
    exit 2
fi
domain=$1 folder=$2 kinds=$3
shift 3
jobs=1
if [ "${1:-}" = "--jobs" ]; then
    jobs=$2
    shift 2
fi
[ "${1:-}" = "--" ] && shift
python=${PYTHON:-python}
[ -d "$folder" ] || { echo "error: no folder $folder" >&2; exit 2; }
logs="$folder/logs/measure"
mkdir -p "$logs"

measure_run() {  # run_dir: each kind in turn (one run's measurements share its lock)
    local run=$1 kind log status=0
    for kind in ${kinds//,/ }; do
        log="$logs/$(echo "$run" | tr '/=,' '___').$kind.log"
        if [ -s "$run/$kind.json" ] && [ -z "${FORCE:-}" ]; then
            continue
        fi
        # shellcheck disable=SC2086  # the overrides are key=value words without spaces
        if "$python" -m "${domain}_exps.measure" "$kind" "run_dir=$run" train.progress=false \
            $overrides >"$log" 2>&1; then
            tail -n 1 "$log"
        else
            echo "FAILED: $kind on $run (see $log)" >&2
            status=1
        fi
    done
    return $status
}
overrides="$*"
export -f measure_run
export domain kinds logs python overrides

find "$folder" -name summary.json -not -path '*/logs/*' -printf '%h\0' | sort -z |
    xargs -0 -n 1 -P "$jobs" bash -c 'measure_run "$1"' _

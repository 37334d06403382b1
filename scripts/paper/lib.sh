# Shared by the paper-table and real-data scripts: run a matrix with sweep.sh, then
# tabulate it. Sourced (with no arguments of its own), not run. The caller's arguments are
# sweep.sh options (--jobs N, --slurm ..., --dry-run) and, after "--", overrides for every
# cell (e.g. -- smoke=true).

CALLER_ARGS=("$@")  # sourced without arguments, "$@" is the calling script's

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-python3}"
[ -n "${PYTHON:-}" ] || [ ! -x "$repo/.venv/bin/python" ] || python="$repo/.venv/bin/python"
# where the runs and the tables go: RUNS and RESULTS, relative to the repository (as make's
# targets are) unless absolute; by default runs/<kind> and results/<kind>, <kind> the
# calling script's folder (paper, real)
kind="$(basename "$(dirname "$0")")"
cd "$repo"
runs="${RUNS:-runs/$kind}"
results="${RESULTS:-results/$kind}"

# sweep ARGS...: scripts/sweep.sh with the table's own options, then the caller's.
sweep() {
    "$repo/scripts/sweep.sh" "$@"
}

# given OPTION...: whether the caller's sweep options (before --) hold one of OPTION...
given() {
    local option wanted
    for option in "${CALLER_ARGS[@]}"; do
        [ "$option" = "--" ] && break
        for wanted in "$@"; do [ "$option" = "$wanted" ] && return 0; done
    done
    return 1
}

# deferred: whether the cells have not run when the script reaches its tables
deferred() {
    given --dry-run --slurm
}

# after COMMAND...: runs it now, or, deferred, says to run it once the runs have finished.
after() {
    if deferred; then
        echo "when the runs have finished: (cd $repo && $*)"
    else
        "$@"
    fi
}

# tabulate OUT PATH...: the tables over seeds of the runs under PATH... into OUT (after the
# runs, see above); where the caller passed --select, each optimizer at its chosen setting.
tabulate() {
    local out="$1"
    shift
    local select=()
    if given --select; then select=(--select); fi
    after "$python" -m common.tables "${select[@]}" "$@" --out "$out"
}

# split_args ARGS...: the caller's sweep options into OPTIONS and its overrides (after --)
# into OVERRIDES, for a script that adds overrides of its own between them.
split_args() {
    OPTIONS=() OVERRIDES=()
    while (($#)); do
        if [ "$1" = "--" ]; then
            shift
            OVERRIDES=("$@")
            return
        fi
        OPTIONS+=("$1")
        shift
    done
}

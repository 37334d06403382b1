# Shared by the paper-table scripts: run a matrix with sweep.sh, then tabulate it.
# Sourced, not run. The caller's arguments are sweep.sh options (--jobs N, --slurm ...,
# --dry-run) and, after "--", overrides for every cell (e.g. -- smoke=true).

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-python3}"
[ -n "${PYTHON:-}" ] || [ ! -x "$repo/.venv/bin/python" ] || python="$repo/.venv/bin/python"
# where the runs and the tables go: RUNS and RESULTS, relative to the repository (as make's
# targets are) unless absolute
cd "$repo"
runs="${RUNS:-runs/paper}"
results="${RESULTS:-results/paper}"

# sweep ARGS...: scripts/sweep.sh with the table's own options, then the caller's.
sweep() {
    "$repo/scripts/sweep.sh" "$@"
}

# tabulate OUT PATH...: the tables over seeds of the runs under PATH... into OUT; with
# --dry-run or --slurm among the caller's options (the cells have not run yet) it says
# the command to run once they have.
tabulate() {
    local out="$1"
    shift
    local command=("$python" -m common.tables "$@" --out "$out")
    local option
    for option in "${CALLER_ARGS[@]}"; do
        [ "$option" = "--" ] && break
        if [ "$option" = "--dry-run" ] || [ "$option" = "--slurm" ]; then
            echo "when the runs have finished: (cd $repo && ${command[*]})"
            return 0
        fi
    done
    "${command[@]}"
}

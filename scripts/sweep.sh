#!/usr/bin/env bash
# A matrix of training runs (optimizers x grid values x seeds), each trained and measured
# with `python -m <pkg>.train --measure`, locally or as one SLURM job array. See usage().
set -euo pipefail

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
    echo "error: $0 needs bash 4.4 or later (this is $BASH_VERSION)" >&2
    exit 2
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
PROG=scripts/sweep.sh
EXIT_USAGE=2

usage() {
    cat <<EOF
usage: $PROG --config FILE [--optimizers "sgd sam nso"] [--seeds "0 1 2"]
           [--grid [OPT:]key=v1,v2,...]... [--select [--tune-seeds "0"]] [--out DIR] [--jobs N]
           [--slurm [--partition P] [--time T] [--gpus G] [--cpus C]] [--dry-run]
           [-- key=value ...]

Train and measure every cell of a matrix of runs: each optimizer x each combination of
the --grid values x each seed. A cell is one command, run from the repository root:

  \$PYTHON -m <pkg>.train --measure --config FILE optimizer.name=O seed=S \\
      <grid key=value ...> run_dir=<cell dir> train.progress=false <overrides after -->

The domain comes from the config's folder: <pkg>/configs/NAME.yaml runs <pkg>.train
(e.g. graph_exps/configs/sbm.yaml -> python -m graph_exps.train). --config and --out are
relative to the current folder.

options:
  --config FILE        a config under a *_exps/configs/ folder (required)
  --optimizers "A B"   optimizer names, space-separated (default: "sgd sam nso")
  --seeds "0 1"        seeds, space-separated (default: "0")
  --grid KEY=V1,V2     a config key and its values; repeat for a cartesian product
  --grid OPT:KEY=V,..  an axis of optimizer OPT only (e.g. sam:optimizer.rho=0.02,0.05,0.2
                       and nso:optimizer.sigma=0.01,0.03,0.1): the others run without it
  --select             choose each optimizer's grid point on validation data, then run the
                       other seeds at it: the grid runs with the --tune-seeds first, then
                       python -m common.select picks, per optimizer, the setting with the
                       best mean validation metric (the one that selects best.pt; ties to
                       the lower validation loss), and the remaining --seeds run with it
  --tune-seeds "0"     the seeds every grid point runs with under --select (default: the
                       first of --seeds)
  --out DIR            where the cells go (default: <repository>/runs/sweeps/<config name>)
  --jobs N             cells run at once (default: 1; with --slurm: the array's %N limit,
                       none by default)
  --slurm              submit one SLURM job array, one array task per cell, with sbatch
  --partition P        SLURM partition (--slurm only)
  --time T             SLURM time limit per cell, e.g. 04:00:00 (--slurm only)
  --gpus G             GPUs per cell (--slurm only); G > 1 runs the cell under
                       \$PYTHON -m torch.distributed.run --standalone --nproc_per_node=G
  --cpus C             CPU cores per cell (--slurm only; default: 4)
  --dry-run            print what would run and write nothing: locally a 'cd <repository>'
                       line and each cell's command with its environment; with --slurm
                       the sbatch script
  -h, --help           this help
  -- key=value ...     overrides for every cell (e.g. -- smoke=true train.epochs=3)

cell directories:
  <out>/<optimizer>/<k1=v1,k2=v2>/seed<S>   the grid part in the --grid order, left out
                                            without --grid ('/' in a value becomes '_')
  <out>/logs/<optimizer>/.../seed<S>.log    a cell's output, with --jobs N > 1 (appended)
  <out>/logs/%A_%a.out                      SLURM's output of array job %A, task %a
                                            (appended to when SLURM requeues the task)

local runs:
  N cells at once as N plain processes; each gets OMP_NUM_THREADS = MKL_NUM_THREADS =
  max(1, cores / N) and, when there are GPUs (the CUDA_VISIBLE_DEVICES list if it is set,
  else nvidia-smi -L), one of them as CUDA_VISIBLE_DEVICES (job slot modulo GPU count).
  With --jobs 1 the cells' output is on the terminal; with N > 1 it goes to the log files
  and one line is printed as each cell ends. A failed cell does not stop the others; at
  the end a summary line 'N cells: k done, f failed' and the failed cells' commands.

SLURM:
  The script submitted is self-contained: #SBATCH options, the cells' commands as a bash
  array, and array task i runs cell i from the repository. The logs folder is created
  before submitting; sbatch's answer (the job id) is printed. A task preempted or on a
  failed node is requeued (--requeue) and its cell resumes from its checkpoint. A cell
  asks for --cpus cores (4 by default): on nodes with fewer, SLURM keeps the array
  pending (Reason=PartitionConfig).

selection (--select):
  The choice is written to <out>/<optimizer>/selection.md and selection.json (each grid
  point's validation mean ± std and n). With --slurm the tuning cells are submitted first;
  run the same command again once they have finished: it makes the choice and submits the
  remaining seeds. --dry-run shows the tuning cells and the selection command.

idempotence:
  Rerunning the same sweep is safe and cheap: a finished cell (summary.json) is skipped,
  an interrupted one resumes from its checkpoint, and a measurement already made with the
  same options is not made again. A cell directory holding a run with another config is
  refused (that cell fails). So after a crash, a kill or a timeout, run the same command.

exit status: 0 when every cell succeeded, 1 when one failed, 2 for bad usage (one
'error: ...' line), 130 when interrupted.

environment: PYTHON, the interpreter (default: the repository's .venv/bin/python, else
python3). Needs bash 4.4 or later.

examples:
  $PROG --config graph_exps/configs/sbm.yaml --seeds "0 1 2" --jobs 2
  $PROG --config graph_exps/configs/mutag.yaml --optimizers sam \\
      --grid optimizer.rho=0.01,0.05,0.1 --grid data.fold=0,1 -- train.epochs=20
  $PROG --config image_exps/configs/cifar10_wrn16_8.yaml --slurm --partition gpu \\
      --time 08:00:00 --gpus 1 --dry-run
EOF
}

die() {  # a refusal: one line, exit status 2
    echo "error: $*" >&2
    exit "$EXIT_USAGE"
}

absolute() {  # a path relative to the caller's directory, made absolute (it may not exist)
    case $1 in
        /*) printf '%s\n' "${1%/}" ;;
        *) printf '%s\n' "$PWD/${1%/}" ;;
    esac
}

# ------------------------------------------------------------------------ arguments
CONFIG="" OUT="" OPTIMIZERS="sgd sam nso" SEEDS="0" JOBS="" DRY_RUN=0
SLURM=0 PARTITION="" TIME="" GPUS_PER_CELL="" CPUS="" SELECT=0 TUNE_SEEDS=""
GRID_KEYS=() GRID_VALUES=() GRID_OPTS=() EXTRA=()

parse_args() {
    local opt value
    while (($#)); do
        opt=$1
        case $opt in
            --*=*) value=${opt#*=} opt=${opt%%=*} ;;  # --jobs=2 as --jobs 2
            *) value=${2-} ;;
        esac
        case $opt in
            -h | --help)
                usage
                exit 0
                ;;
            --dry-run) DRY_RUN=1 ;;
            --slurm) SLURM=1 ;;
            --select) SELECT=1 ;;
            --) shift; EXTRA=("$@"); return ;;
            --config | --optimizers | --seeds | --grid | --out | --jobs | --partition | --time \
                | --gpus | --cpus | --tune-seeds)
                if [[ $1 == --*=* ]]; then
                    shift
                else
                    (($# >= 2)) || die "$opt needs a value"
                    shift 2
                fi
                case $opt in
                    --config) CONFIG=$value ;;
                    --optimizers) OPTIMIZERS=$value ;;
                    --seeds) SEEDS=$value ;;
                    --grid) add_grid "$value" ;;
                    --out) OUT=$value ;;
                    --jobs) JOBS=$value ;;
                    --partition) PARTITION=$value ;;
                    --time) TIME=$value ;;
                    --gpus) GPUS_PER_CELL=$value ;;
                    --cpus) CPUS=$value ;;
                    --tune-seeds) TUNE_SEEDS=$value ;;
                esac
                continue
                ;;
            -*) die "unknown option $opt (see $PROG --help)" ;;
            *) die "unexpected argument '$opt': overrides go after -- (see $PROG --help)" ;;
        esac
        shift
    done
}

add_grid() {  # [OPT:]KEY=V1,V2,... -> one more grid axis (of optimizer OPT only)
    local spec=$1 key values v opt="" i
    [[ $spec == *=* ]] || die "--grid $spec: expected KEY=V1,V2,..."
    key=${spec%%=*} values=${spec#*=}
    if [[ $key == *:* ]]; then
        opt=${key%%:*} key=${key#*:}
        [[ $opt =~ ^[A-Za-z0-9_.-]+$ ]] || die "--grid $spec: '$opt' is not an optimizer name"
    fi
    plain "--grid" "$spec"
    [[ -n $key ]] || die "--grid $spec: the key is empty"
    config_key "$key" || die "--grid $spec: '$key' is not a config key (e.g. optimizer.rho)"
    [[ -n $values && $values != *, && $values != ,* && $values != *,,* ]] ||
        die "--grid $spec: an empty value (expected KEY=V1,V2,...)"
    if own_key "$key"; then
        die "--grid $key: the sweep sets $key itself (use --optimizers/--seeds)"
    fi
    for i in "${!GRID_KEYS[@]}"; do
        [[ ${GRID_KEYS[i]} != "$key" || (-n $opt && -n ${GRID_OPTS[i]} && $opt != "${GRID_OPTS[i]}") ]] ||
            die "--grid $key is given twice for ${opt:-every optimizer}: list its values once"
    done
    GRID_KEYS+=("$key")
    GRID_VALUES+=("$values")
    GRID_OPTS+=("$opt")
}

config_key() {  # a key as the training command parses it: dotted identifiers, nothing else
    [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$ ]]
}

plain() {  # $1 what, $2 its text: no control character (a tab splits a grid's pairs, a
    # newline drops what follows it, and either ends a line of the generated SLURM script)
    [[ $2 != *[[:cntrl:]]* ]] ||
        die "$1 holds a control character (a tab, a newline): $(printf '%q' "$2")"
}

own_key() {  # keys every cell sets itself
    [[ $1 == optimizer.name || $1 == seed || $1 == run_dir ]]
}

positive() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

check_args() {
    [[ -n $CONFIG ]] || die "which config? pass --config FILE (e.g. graph_exps/configs/sbm.yaml)"
    [[ -f $CONFIG ]] || die "--config $CONFIG: no such file"
    local dir
    dir=$(cd "$(dirname "$CONFIG")" && pwd -P)
    CONFIG="$dir/$(basename "$CONFIG")"
    PKG=$(basename "$(dirname "$dir")")
    [[ $(basename "$dir") == configs && $PKG == *_exps ]] ||
        die "--config $CONFIG is not under a <domain>_exps/configs/ folder (e.g. graph_exps/configs/)"
    [[ -f $REPO/$PKG/train.py ]] || die "--config $CONFIG: this repository has no $PKG/train.py"
    STEM=$(basename "$CONFIG")
    STEM=${STEM%.*}
    OUT=$(absolute "${OUT:-$REPO/runs/sweeps/$STEM}")

    read -ra OPTIMIZER_LIST <<<"$OPTIMIZERS"
    read -ra SEED_LIST <<<"$SEEDS"
    ((${#OPTIMIZER_LIST[@]})) || die "--optimizers is empty"
    ((${#SEED_LIST[@]})) || die "--seeds is empty"
    local x
    for x in "${OPTIMIZER_LIST[@]}"; do
        [[ $x =~ ^[A-Za-z0-9_.-]+$ ]] || die "--optimizers: '$x' is not an optimizer name"
    done
    for x in "${SEED_LIST[@]}"; do
        [[ $x =~ ^[0-9]+$ ]] || die "--seeds: '$x' is not a non-negative integer"
    done
    for x in "${GRID_OPTS[@]}"; do
        [[ -z $x || " ${OPTIMIZER_LIST[*]} " == *" $x "* ]] ||
            die "--grid $x:...: $x is not one of --optimizers ($OPTIMIZERS)"
    done
    read -ra TUNE_LIST <<<"${TUNE_SEEDS:-${SEED_LIST[0]}}"
    if ((SELECT)); then
        ((${#GRID_KEYS[@]})) || die "--select chooses among --grid values: give a --grid"
        for x in "${TUNE_LIST[@]}"; do
            [[ " ${SEED_LIST[*]} " == *" $x "* ]] || die "--tune-seeds: $x is not one of --seeds"
        done
    else
        [[ -z $TUNE_SEEDS ]] || die "--tune-seeds needs --select"
    fi
    for x in "${EXTRA[@]}"; do
        plain "override after --" "$x"
        [[ $x == ?*=* ]] || die "override '$x' after --: expected key=value"
        config_key "${x%%=*}" ||
            die "override '$x' after --: '${x%%=*}' is not a config key (e.g. train.epochs)"
        if own_key "${x%%=*}"; then die "override $x: the sweep sets ${x%%=*} for each cell"; fi
    done
    for x in config:"$CONFIG" out:"$OUT" optimizers:"$OPTIMIZERS" seeds:"$SEEDS" \
        partition:"$PARTITION" time:"$TIME" tune-seeds:"$TUNE_SEEDS"; do
        plain "--${x%%:*}" "${x#*:}"
    done

    [[ -z $JOBS ]] || positive "$JOBS" || die "--jobs $JOBS: expected a positive integer"
    if ((!SLURM)); then
        for x in partition:"$PARTITION" time:"$TIME" gpus:"$GPUS_PER_CELL" cpus:"$CPUS"; do
            [[ -z ${x#*:} ]] || die "--${x%%:*} needs --slurm"
        done
    fi
    [[ -z $GPUS_PER_CELL ]] || positive "$GPUS_PER_CELL" ||
        die "--gpus $GPUS_PER_CELL: expected a positive integer"
    [[ -z $CPUS ]] || positive "$CPUS" || die "--cpus $CPUS: expected a positive integer"
    [[ $PARTITION != *[[:space:]]* && $TIME != *[[:space:]]* ]] ||
        die "--partition and --time take one word"
    # the SLURM log path is a double-quoted #SBATCH value, where \ turns off sbatch's %A
    ((!SLURM)) || [[ $OUT != *[\"\\]* ]] ||
        die "--out $OUT: with --slurm, the folder's path cannot hold \" or \\"

    if [[ -z ${PYTHON:-} ]]; then
        if [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
    elif [[ $PYTHON == */* ]]; then
        PYTHON=$(absolute "$PYTHON")  # the cells run from the repository root
    fi
}

# ------------------------------------------------------------------------ cells
CELL_NAMES=() CELL_CMDS=()  # per cell: <optimizer>/[<grid>/]seed<S>, its quoted command

grid_combinations() {  # optimizer -> one line per combination: key=value pairs, tab-separated
    local combos=("") next i v c opt=$1
    for i in "${!GRID_KEYS[@]}"; do
        [[ -z ${GRID_OPTS[i]} || ${GRID_OPTS[i]} == "$opt" ]] || continue
        next=()
        IFS=, read -ra values <<<"${GRID_VALUES[$i]}"
        for c in "${combos[@]}"; do
            for v in "${values[@]}"; do
                next+=("${c:+$c$'\t'}${GRID_KEYS[$i]}=$v")
            done
        done
        combos=("${next[@]}")
    done
    printf '%s\n' "${combos[@]}"
}

has_grid() {  # whether optimizer $1 has a grid axis
    local i
    for i in "${!GRID_KEYS[@]}"; do
        [[ -n ${GRID_OPTS[i]} && ${GRID_OPTS[i]} != "$1" ]] || return 0
    done
    return 1
}

declare -A COMBO_OF  # <optimizer>/<grid folder> -> its key=value pairs, tab-separated

add_cell() {  # optimizer, seed, key=value pairs...: one more cell
    local opt=$1 seed=$2 name argv joined
    shift 2
    name=$opt
    if (($#)); then
        joined=$(IFS=,; echo "$*")
        name+="/${joined//\//_}"  # a value such as org/model stays one folder
        COMBO_OF[$name]=$(IFS=$'\t'; echo "$*")
    fi
    name+="/seed$seed"
    argv=("${LAUNCHER[@]}" "$PKG.train" --measure --config "$CONFIG"
        "optimizer.name=$opt" "seed=$seed" "$@" "run_dir=$OUT/$name"
        train.progress=false "${EXTRA[@]}")
    CELL_NAMES+=("$name")
    CELL_CMDS+=("$(printf '%q ' "${argv[@]}")")
}

# the cells of every seed, or under --select those that tune (every grid point with the
# tune seeds; every seed of the optimizers without a grid)
build_cells() {
    local opt seed combo pairs
    local -a combos seeds
    LAUNCHER=("$PYTHON" -m)
    if [[ ${GPUS_PER_CELL:-1} -gt 1 ]]; then  # the trainer supports torchrun
        LAUNCHER=("$PYTHON" -m torch.distributed.run --standalone
            "--nproc_per_node=$GPUS_PER_CELL" -m)
    fi
    for opt in "${OPTIMIZER_LIST[@]}"; do
        mapfile -t combos < <(grid_combinations "$opt")
        seeds=("${SEED_LIST[@]}")
        if ((SELECT)) && has_grid "$opt"; then seeds=("${TUNE_LIST[@]}"); fi
        for combo in "${combos[@]}"; do
            IFS=$'\t' read -ra pairs <<<"$combo"
            for seed in "${seeds[@]}"; do add_cell "$opt" "$seed" "${pairs[@]}"; done
        done
    done
}

tuned() {  # whether every tuning cell has finished (its summary.json exists)
    local name
    for name in "${CELL_NAMES[@]}"; do [[ -f $OUT/$name/summary.json ]] || return 1; done
}

# under --select, after the tuning cells: each gridded optimizer's choice on validation data
# (written to <out>/<optimizer>/selection.*), and the cells of its remaining seeds at every
# combination of the chosen setting (its other axes, such as folds, kept); an optimizer
# whose runs differ in nothing but pooled axes (folds) has no choice and runs them all
build_chosen_cells() {
    local opt seed dir combo chosen listed
    local -a runs combos
    local -A seen
    CELL_NAMES=() CELL_CMDS=()
    for opt in "${OPTIMIZER_LIST[@]}"; do
        has_grid "$opt" || continue
        listed=$("$PYTHON" -m common.select "$OUT/$opt" --chosen-runs "$opt" \
            --out "$OUT/$opt") || die "cannot choose $opt's setting (above)"
        runs=()
        [[ -z $listed ]] || mapfile -t runs <<<"$listed"
        if ((${#runs[@]} == 0)); then  # no choice to make: the remaining seeds run every point
            mapfile -t combos < <(grid_combinations "$opt")
        else
            # the chosen values, where one data set makes them one setting
            chosen=$("$PYTHON" -m common.select "$OUT/$opt" --overrides "$opt" 2>/dev/null |
                paste -sd ' ' || true)
            echo "$opt: chosen on validation data: ${chosen:-per data set} (see" \
                "$OUT/$opt/selection.md)"
            combos=() seen=()
            for dir in "${runs[@]}"; do
                dir=${dir#"$OUT/$opt/"}
                combo=$opt/${dir%/seed*}  # the cell's name without its seed, as add_cell made it
                [[ -n ${COMBO_OF[$combo]+set} ]] || die "$dir is not a cell of this sweep"
                [[ -n ${seen[$combo]+set} ]] || combos+=("${COMBO_OF[$combo]}")
                seen[$combo]=1
            done
        fi
        for seed in "${SEED_LIST[@]}"; do
            [[ " ${TUNE_LIST[*]} " != *" $seed "* ]] || continue
            for combo in "${combos[@]}"; do
                IFS=$'\t' read -ra pairs <<<"$combo"
                add_cell "$opt" "$seed" "${pairs[@]}"
            done
        done
    done
}

# ------------------------------------------------------------------------ local runs
GPU_IDS=()

detect_gpus() {  # CUDA_VISIBLE_DEVICES when set (empty: none), else nvidia-smi's list
    local id
    if [[ -n ${CUDA_VISIBLE_DEVICES+set} ]]; then
        IFS=, read -ra ids <<<"$CUDA_VISIBLE_DEVICES"
        for id in "${ids[@]}"; do
            [[ -n $id && $id != -* && $id != NoDevFiles ]] || break  # CUDA stops there too
            GPU_IDS+=("$id")
        done
    elif command -v nvidia-smi >/dev/null 2>&1; then
        local n
        n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
        for ((id = 0; id < n; id++)); do GPU_IDS+=("$id"); done
    fi
}

cell_env() {  # job slot -> the environment prefix of the cell it runs
    local slot=$1 cores threads
    # nproc honours OMP_NUM_THREADS, which is what is computed here
    cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 1)
    threads=$((cores / JOBS))
    ((threads >= 1)) || threads=1
    printf 'OMP_NUM_THREADS=%d MKL_NUM_THREADS=%d' "$threads" "$threads"
    if ((${#GPU_IDS[@]})); then
        printf ' CUDA_VISIBLE_DEVICES=%q' "${GPU_IDS[slot % ${#GPU_IDS[@]}]}"
    fi
}

worker() {  # job slot w runs cells w, w + JOBS, ...; one "index status" line each
    local w=$1 status=$2 i rc start env_prefix log
    # with JOBS > 1, the main shell sends TERM to stop the sweep (a cell in the foreground
    # of a --jobs 1 sweep gets the terminal's Ctrl-C itself and ends with status 130)
    ((JOBS == 1)) || trap 'exit 143' TERM
    env_prefix=$(cell_env "$w")
    for ((i = w; i < ${#CELL_CMDS[@]}; i += JOBS)); do
        start=$SECONDS rc=0
        if ((JOBS == 1)); then
            echo "== cell $((i + 1))/${#CELL_CMDS[@]}: ${CELL_NAMES[i]}"
            eval "$env_prefix ${CELL_CMDS[i]}" || rc=$?
        else
            log=$OUT/logs/${CELL_NAMES[i]}.log
            mkdir -p "$(dirname "$log")"
            {
                echo "== $(date '+%Y-%m-%d %H:%M:%S') $env_prefix ${CELL_CMDS[i]% }"
                eval "$env_prefix ${CELL_CMDS[i]}"
            } >>"$log" 2>&1 </dev/null || rc=$?
            if ((rc == 0)); then
                echo "done   ${CELL_NAMES[i]} ($((SECONDS - start)) s)"
            else
                echo "failed ${CELL_NAMES[i]} (exit $rc; log: $log)"
            fi
        fi
        echo "$i $rc" >>"$status"
        ((rc != 130)) || return 130  # Ctrl-C in a cell: the user wants the sweep to stop
    done
}

WORKER_PIDS=() STATUS_DIRS=()

stop_workers() {  # forwards an interrupt to each worker's process group, cells included
    local pid
    trap - INT TERM
    for pid in "${WORKER_PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    wait || true
    echo "interrupted: rerun the same sweep to resume" >&2
    exit 130
}

run_local() {
    local status_dir w
    detect_gpus
    status_dir=$(mktemp -d)
    STATUS_DIRS+=("$status_dir")  # --select runs twice: both folders go at exit
    trap 'rm -rf "${STATUS_DIRS[@]}"' EXIT
    if ((JOBS == 1)); then
        worker 0 "$status_dir/0" || true
    else
        set -m  # each worker in a process group of its own, to stop with its cells
        for ((w = 0; w < JOBS && w < ${#CELL_CMDS[@]}; w++)); do
            worker "$w" "$status_dir/$w" &
            WORKER_PIDS+=("$!")
        done
        set +m
        trap stop_workers INT TERM
        wait || true
        trap - INT TERM
    fi
    report "$status_dir"
}

report() {  # the summary line; exit 1 when a cell failed, 130 when one was interrupted
    local status_dir=$1 i rc ok=0 failed=0 interrupted=0 n=${#CELL_CMDS[@]}
    local -a failures=()
    while read -r i rc; do
        if ((rc == 0)); then
            ok=$((ok + 1))
        elif ((rc == 130)); then  # stopped by Ctrl-C: not run to its end, not failed
            interrupted=1
        else
            failed=$((failed + 1))
            failures+=("$i")
        fi
    done < <(cat "$status_dir"/* 2>/dev/null)
    local line="$n cells: $ok done, $failed failed"
    ((ok + failed == n)) || line+=", $((n - ok - failed)) not run"
    echo "$line"
    if ((failed)); then
        echo "failed cells:"
        for i in "${failures[@]}"; do
            echo "  ${CELL_NAMES[i]}: ${CELL_CMDS[i]% }"
            ((JOBS == 1)) || echo "    log: $OUT/logs/${CELL_NAMES[i]}.log"
        done
    fi
    if ((interrupted)); then
        echo "interrupted: rerun the same sweep to resume" >&2
        exit 130
    fi
    ((failed == 0)) || exit 1
}

dry_run_local() {  # the commands as they would run, from the repository root
    local i
    detect_gpus
    printf 'cd %q\n' "$REPO"
    for i in "${!CELL_CMDS[@]}"; do
        echo "$(cell_env $((i % JOBS))) ${CELL_CMDS[i]% }"
    done
}

# ------------------------------------------------------------------------ SLURM
single_quoted() {  # the text to put between single quotes: each ' as '\''
    printf '%s' "${1//\'/\'\\\'\'}"
}

sbatch_script() {  # a self-contained job array: task i runs cell i
    local n=${#CELL_CMDS[@]} cpus=${CPUS:-4} gpus=${GPUS_PER_CELL:-0} i
    echo "#!/bin/bash"
    echo "#SBATCH --job-name=sweep-$STEM"
    echo "#SBATCH --array=0-$((n - 1))${JOBS:+%$JOBS}"  # %N: at most N tasks at once
    # quoted, for a path with a space; a literal % is %% (sbatch expands %A, %a, %x...)
    echo "#SBATCH --output=\"${OUT//%/%%}/logs/%A_%a.out\""
    echo "#SBATCH --open-mode=append"  # a requeued task's log keeps its first attempt
    echo "#SBATCH --requeue"  # preempted, or its node failed: run again (the cell resumes)
    echo "#SBATCH --ntasks=1"
    echo "#SBATCH --cpus-per-task=$cpus"
    [[ -z $PARTITION ]] || echo "#SBATCH --partition=$PARTITION"
    [[ -z $TIME ]] || echo "#SBATCH --time=$TIME"
    ((gpus == 0)) || echo "#SBATCH --gres=gpu:$gpus"
    cat <<EOF
# written by $PROG; its cells are <out>/<optimizer>/[<grid>/]seed<S> under $(printf '%q' "$OUT")
set -euo pipefail
CELLS=(
EOF
    for i in "${!CELL_CMDS[@]}"; do  # each a command line quoted with printf %q, in '...'
        printf "    '%s'  # %s: %s\n" "$(single_quoted "${CELL_CMDS[i]% }")" "$i" "${CELL_NAMES[i]}"
    done
    cat <<EOF
)
task=\${SLURM_ARRAY_TASK_ID:?submit this script with sbatch (it runs one cell per array task)}
if ((task < 0 || task >= \${#CELLS[@]})); then
    echo "error: array task \$task: this sweep has cells 0-$((n - 1))" >&2
    exit 2
fi
# the cores SLURM gave the task, shared by its processes (one per GPU)
threads=\$(( \${SLURM_CPUS_PER_TASK:-$cpus} / $((gpus > 1 ? gpus : 1)) ))
export OMP_NUM_THREADS=\$(( threads > 0 ? threads : 1 ))
export MKL_NUM_THREADS=\$OMP_NUM_THREADS
cd $(printf '%q' "$REPO")
echo "cell \$task of $n: \${CELLS[\$task]}"
eval "\${CELLS[\$task]}"
EOF
}

submit() {
    command -v sbatch >/dev/null 2>&1 ||
        die "sbatch not found on PATH: submit from a SLURM login node, or drop --slurm to run locally"
    mkdir -p "$OUT/logs"  # SLURM does not create the --output folder
    sbatch_script | sbatch || {
        echo "error: sbatch refused the job array (its message is above)" >&2
        exit 1
    }
}

main() {
    parse_args "$@"
    check_args
    ((SLURM)) || JOBS=${JOBS:-1}  # SLURM: no limit unless --jobs gives one
    build_cells
    cd "$REPO"  # python -m <pkg>.train imports the package from here
    if ((SELECT && DRY_RUN)); then
        if ((SLURM)); then sbatch_script; else dry_run_local; fi
        echo "# then: $PYTHON -m common.select $OUT/<optimizer> --overrides <optimizer>" \
            "chooses each gridded optimizer's setting; seeds not in '${TUNE_LIST[*]}' run at it"
    elif ((SLURM)); then
        if ((SELECT)) && tuned; then
            build_chosen_cells
            submit
        else
            if ((DRY_RUN)); then sbatch_script; else submit; fi
            ((!SELECT)) || echo "--select: run this command again once the array has" \
                "finished; it chooses each optimizer's setting and submits the other seeds"
        fi
    elif ((DRY_RUN)); then
        dry_run_local
    else
        ((!SELECT)) || echo "tuning: ${#CELL_CMDS[@]} cells (seeds ${TUNE_LIST[*]} at every grid point)"
        run_local
        if ((SELECT)); then
            build_chosen_cells
            ((${#CELL_CMDS[@]})) || return 0
            run_local
        fi
    fi
}

main "$@"

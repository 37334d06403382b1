#!/usr/bin/env bash
# Real-data table, graphs: the NSO paper's GCN recipe (graph_exps/configs/<set>.yaml: 2
# layers, hidden 64, batch norm, mean pooling, Adam lr 0.01, 200 epochs) on MUTAG and
# PTC_MR, both shipped with the package, 10 stratified folds (seed 0). Adam, SAM and NSO;
# SAM's rho and NSO's sigma chosen from a grid on the validation graphs of every fold
# (pooled), the test folds untouched by the choice; every run measured.
#
# Data:    graph_exps/embedded/{MUTAG,PTC_MR} (installed into data/ with their checksums).
# Runtime: 2 sets x 10 folds x (1 + 3 + 3) settings = 140 runs; about 25 minutes on 2 CPU
#          cores with --jobs 2 (measured; a GPU is not needed).
# Usage:   scripts/real/graphs.sh [--jobs N | --slurm ...] [--dry-run] [-- key=value ...]
#          SETS="mutag", FOLDS="0 1 2", RHOS="0.02,0.05,0.2", SIGMAS="0.01,0.03,0.1".
# Output:  runs/real/graph/<set>/ (runs), results/real/graph/ (selection.md, the tables
#          over folds of the chosen settings, the trade-off and bar figures).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../paper/lib.sh"
sets="${SETS:-mutag ptc_mr}"
folds="${FOLDS:-0 1 2 3 4 5 6 7 8 9}"

for set in $sets; do
    sweep --config "graph_exps/configs/$set.yaml" --optimizers "adam sam nso" --seeds 0 \
        --grid "data.fold=${folds// /,}" --grid "sam:optimizer.rho=${RHOS:-0.02,0.05,0.2}" \
        --grid "nso:optimizer.sigma=${SIGMAS:-0.01,0.03,0.1}" --select \
        --out "$runs/graph/$set" "$@"
done
tabulate "$results/graph" --select "$runs/graph"

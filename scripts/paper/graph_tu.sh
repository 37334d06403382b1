#!/usr/bin/env bash
# The NSO paper's graph table: a GCN (2 layers, hidden 64, batch norm, mean pooling) on the
# TUDataset sets with Adam (the base), SAM and NSO, 10 stratified folds each (seed 0):
# test accuracy, Hessian trace, top eigenvalue and noise stability, mean ± std over folds.
#
# Data:    the TU raw files data/<NAME>/raw/*.txt, downloaded by PyG when online
#          (graph_exps/README.md). SETS="mutag proteins ..." picks the configs, FOLDS the folds.
# Config:  graph_exps/configs/<set>.yaml (Adam lr 0.01, 200 epochs, batch 128).
# Runtime: 9 sets x 10 folds x 3 optimizers = 270 runs; seconds to minutes each on one
#          GPU (MUTAG) up to about half an hour (COLLAB, REDDIT-MULTI-5K): roughly 10-20
#          GPU-hours in all (estimated, not measured here).
# Usage:   scripts/paper/graph_tu.sh [--jobs N | --slurm ...] [--dry-run] [-- key=value ...]
# Output:  runs/paper/graph/<set>/ (runs), results/paper/graph/ (tables and figures).
# RUNS=DIR and RESULTS=DIR move the runs and the tables (relative to the repository).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
sets="${SETS:-mutag ptc_mr proteins nci1 imdb-binary imdb-multi collab reddit-binary
    reddit-multi-5k}"
folds="${FOLDS:-0 1 2 3 4 5 6 7 8 9}"

for set in $sets; do
    sweep --config "graph_exps/configs/$set.yaml" --optimizers "adam sam nso" --seeds 0 \
        --grid "data.fold=${folds// /,}" --out "$runs/graph/$set" "$@"
done
tabulate "$results/graph" "$runs/graph"

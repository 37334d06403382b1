#!/usr/bin/env bash
# The SAM course project's MIT-BIH experiment: its attention model on the Kaggle heartbeat
# CSVs with SGD (the base), SAM and NSO, 3 seeds each (accuracy, macro-F1, Hessian trace,
# top eigenvalue, noise stability), then its SAM rho sweep (0.01 .. 1, 3 seeds each) with
# accuracy and sharpness against rho and SGD as the reference line.
#
# Data:    data/mitbih/mitbih_train.csv and mitbih_test.csv (the Kaggle "ECG Heartbeat
#          Categorization" files, ecg_exps/README.md).
# Config:  ecg_exps/configs/mitbih_attention.yaml (50 epochs, batch 128, SGD lr 0.01).
# Runtime: 9 + 21 runs; one to two hours each on one GPU (SAM and NSO twice SGD): roughly
#          40-50 GPU-hours in all (estimated from the config's figure, not measured here).
# Usage:   scripts/paper/mitbih.sh [--jobs N | --slurm ...] [--dry-run] [-- key=value ...]
# Output:  runs/paper/mitbih/{main,rho}/ (runs); results/paper/mitbih/ (the table) and
#          results/paper/mitbih_rho/ (the sweep: sweep_optimizer.rho.png).
# RUNS=DIR and RESULTS=DIR move the runs and the tables (relative to the repository);
# SEEDS="0 1 2" sets the seeds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
seeds="${SEEDS:-0 1 2}"
rhos="${RHOS:-0.01 0.02 0.05 0.1 0.2 0.5 1.0}"

config=ecg_exps/configs/mitbih_attention.yaml
sweep --config "$config" --optimizers "sgd sam nso" --seeds "$seeds" --out "$runs/mitbih/main" \
    "$@"
sweep --config "$config" --optimizers sam --seeds "$seeds" --grid "optimizer.rho=${rhos// /,}" \
    --out "$runs/mitbih/rho" "$@"
tabulate "$results/mitbih" "$runs/mitbih/main"
# the sweep with the SGD runs as its reference (not the main SAM runs: rho 0.05 is in both)
tabulate "$results/mitbih_rho" "$runs/mitbih/rho" "$runs/mitbih/main/sgd"

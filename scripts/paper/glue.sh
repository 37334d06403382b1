#!/usr/bin/env bash
# GLUE with the NSO reference code's setting: bert-base-uncased fine-tuned with AdamW (the
# base), SAM and NSO on eight GLUE tasks, 3 seeds each: each task's metric (CoLA MCC, STS-B
# Pearson, MRPC F1 and accuracy, the others accuracy) on the validation set, Hessian trace,
# top eigenvalue and noise stability, mean ± std. The NSO paper publishes no GLUE table:
# this compares the optimizers with each other.
#
# Data:    the GLUE parquet files from the Hugging Face hub (nyu-mll/glue), downloaded by
#          datasets when online; TASKS="rte mrpc ..." picks the tasks.
# Config:  text_exps/configs/nso_glue.yaml (AdamW lr 2e-5, batch 8, 5 epochs, linear).
# Runtime: 72 runs; minutes each on one GPU for RTE, MRPC, STS-B and CoLA, hours for MNLI
#          and QQP: roughly 100 GPU-hours in all, most of it MNLI and QQP (estimated, not
#          measured here).
# Usage:   scripts/paper/glue.sh [--jobs N | --slurm ...] [--dry-run] [-- key=value ...]
# Output:  runs/paper/glue/ (runs), results/paper/glue/ (tables and figures).
# RUNS=DIR and RESULTS=DIR move the runs and the tables (relative to the repository);
# SEEDS="0 1 2" sets the seeds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
seeds="${SEEDS:-0 1 2}"
tasks="${TASKS:-cola sst2 mrpc stsb qqp mnli qnli rte}"

sweep --config text_exps/configs/nso_glue.yaml --optimizers "adamw sam nso" --seeds "$seeds" \
    --grid "data.name=${tasks// /,}" --out "$runs/glue" "$@"
tabulate "$results/glue" "$runs/glue"

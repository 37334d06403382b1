#!/usr/bin/env bash
# The NSO paper's sensitivity study: NSO's sigma (0.008 .. 0.015) and number of
# perturbations k (1 .. 4) on one fine-tuning set (DATASET, default cub200), 3 seeds each,
# with Adam as the reference: test accuracy, Hessian trace, top eigenvalue and noise
# stability against sigma (one line per k).
#
# Data:    the ImageFolder tree data/<DATASET>/ and the ResNet-34 ImageNet weights, as
#          nso_image.sh.
# Config:  image_exps/configs/nso_finetune.yaml.
# Runtime: 48 NSO runs + 3 Adam runs; an NSO step costs 2k passes, so about 1 (k = 1) to
#          4 (k = 4) hours a run on one GPU: roughly 120 GPU-hours in all (estimated, not
#          measured here).
# Usage:   scripts/paper/nso_sigma.sh [--jobs N | --slurm ...] [--dry-run] [-- key=value ...]
# Output:  runs/paper/nso_sigma/ (runs), results/paper/nso_sigma/ (sweep_optimizer.sigma.png,
#          sweep_optimizer.num_perturbs.png and the tables).
# RUNS=DIR and RESULTS=DIR move the runs and the tables (relative to the repository);
# SEEDS="0 1 2" sets the seeds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
seeds="${SEEDS:-0 1 2}"
dataset="${DATASET:-cub200}"

config=image_exps/configs/nso_finetune.yaml
# the data set as a one-value grid key: the caller's "-- key=value" overrides stay last
sweep --config "$config" --optimizers nso --seeds "$seeds" --grid "data.name=$dataset" \
    --grid "optimizer.sigma=0.008,0.01,0.012,0.015" --grid "optimizer.num_perturbs=1,2,3,4" \
    --out "$runs/nso_sigma" "$@"
sweep --config "$config" --optimizers adam --seeds "$seeds" --grid "data.name=$dataset" \
    --out "$runs/nso_sigma" "$@"
tabulate "$results/nso_sigma" "$runs/nso_sigma"

#!/usr/bin/env bash
# The NSO paper's fine-tuning table: an ImageNet-pretrained ResNet-34 fine-tuned on six
# fine-grained image sets (Aircraft, Caltech-256, CUB-200, Indoor-67, Flowers-102,
# Stanford Cars; DATASETS="..." to change them) with Adam (the base), SAM and NSO, 3 seeds
# each: test accuracy, Hessian trace, top eigenvalue and noise stability, mean ± std.
#
# Data:    ImageFolder trees data/<name>/{train,test}/<class>/*.jpg (image_exps/README.md);
#          torchvision's ResNet-34 ImageNet weights (downloaded once).
# Config:  image_exps/configs/nso_finetune.yaml (Adam lr 1e-4, 30 epochs, batch 32, 224 px).
# Runtime: 54 runs; about an hour each on one GPU for NSO and SAM (two passes a step), half
#          that for Adam: roughly 40-50 GPU-hours in all (estimated from the config's
#          figure, not measured here).
# Usage:   scripts/paper/nso_image.sh [--jobs N | --slurm --partition P --time 02:00:00
#          --gpus 1] [--dry-run] [-- key=value ...]
#          (DATASETS=digits ... -- smoke=true: seconds, on the embedded digits)
# Output:  runs/paper/nso_image/ (runs), results/paper/nso_image/ (tables and figures).
# RUNS=DIR and RESULTS=DIR move the runs and the tables (relative to the repository);
# SEEDS="0 1 2" sets the seeds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
seeds="${SEEDS:-0 1 2}"
datasets="${DATASETS:-aircraft caltech256 cub200 indoor flowers cars}"

sweep --config image_exps/configs/nso_finetune.yaml --optimizers "adam sam nso" \
    --seeds "$seeds" --grid "data.name=${datasets// /,}" --out "$runs/nso_image" "$@"
tabulate "$results/nso_image" "$runs/nso_image"

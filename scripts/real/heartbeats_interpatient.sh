#!/usr/bin/env bash
# Real-data table, heartbeats across patients: Kachuee's 1-D CNN trained on de Chazal et
# al.'s DS1 records and tested on DS2's (ecg_exps/configs/mitdb_interpatient_cnn.yaml:
# DS1's 45,918 beats, 10 % of them validating, all 49,712 DS2 beats tested). SGD, SAM and NSO, 3 seeds; SAM's rho and NSO's sigma chosen on the
# validation macro-F1 from a grid with seed 0, then seeds 1 and 2 at the choice; every run
# measured; per-class sensitivity and PPV.
#
# Data:    not shipped beyond records 100 and 208 (the package keeps small). MITDB_ROOT=DIR
#          holds DIR/mitdb/<record>.{hea,dat,atr}, PhysioNet's mitdb 1.0.0 (ODC-By 1.0):
#          `wfdb.dl_database("mitdb", "DIR/mitdb")` or PhysioNet's zip; default data/.
# Runtime: 13 runs; 27 minutes on 2 CPU cores with --jobs 2 (measured, shared with other work).
# Usage:   [MITDB_ROOT=DIR] scripts/real/heartbeats_interpatient.sh [--jobs N | --slurm ...]
#          [--dry-run] [-- key=value ...]
# Output:  runs/real/ecg_interpatient/ (runs), results/real/ecg_interpatient/ (tables, figures).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../paper/lib.sh"
split_args "$@"  # the caller's overrides go after the data's
sweep --config ecg_exps/configs/mitdb_interpatient_cnn.yaml --optimizers "sgd sam nso" \
    --seeds "${SEEDS:-0 1 2}" --grid "sam:optimizer.rho=${RHOS:-0.02,0.05,0.2}" \
    --grid "nso:optimizer.sigma=${SIGMAS:-0.01,0.03,0.1}" --select \
    --out "$runs/ecg_interpatient/cnn1d" "${OPTIONS[@]}" -- \
    "data.root=${MITDB_ROOT:-data}" "${OVERRIDES[@]}"
tabulate "$results/ecg_interpatient" --select "$runs/ecg_interpatient"

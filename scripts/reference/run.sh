#!/usr/bin/env bash
# Regenerate the reference results under runs/reference/ from nothing. Resumable: rerun the same
# command after an interruption and finished cells are skipped. Each experiment ends by writing
# its REPORT.md, report.json, results.csv and figures/.
#
#   scripts/reference/run.sh                 # every experiment, in order
#   scripts/reference/run.sh classic         # one of: classic modern objectives
#
# Work and wall time on a 2-core CPU (float32; the estimates are `stackae ablate --dry-run`'s
# FLOP counts at about 110 GFLOP/s; measured times are in the README's Results section):
#   classic     sigmoid 784-1000-1000-500, denoising vs random, SGD fine-tuning, budgets
#               100/1000/10000/all, 5 seeds             ~510 TFLOP, about 1.5 hours
#   modern      ReLU, Adam + dropout 0.2 fine-tuning, denoising vs random vs kaiming, all labels,
#               5 seeds                                 ~420 TFLOP, about 1.2 hours
#   objectives  plain, denoising, sparse, contractive, RBM vs random, all labels, 3 seeds
#                                                       ~630 TFLOP, about 1.8 hours
set -euo pipefail
cd "$(dirname "$0")/../.."
for name in "${@:-classic modern objectives}"; do
  for n in $name; do
    stackae ablate --config "scripts/reference/$n.json" --out "runs/reference/$n" --resume
  done
done

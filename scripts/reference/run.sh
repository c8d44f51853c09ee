#!/usr/bin/env bash
# Regenerate the reference results under runs/reference/ from nothing. Resumable: rerun the same
# command after an interruption and finished cells are skipped. Each experiment ends by writing
# its REPORT.md, report.json, results.csv and figures/.
#
#   scripts/reference/run.sh                 # every experiment, in order
#   scripts/reference/run.sh classic         # one experiment: any name listed below
#
# Wall time on this project's 2-core CPU (float32, partly beside other jobs; details in the
# README's Results section and each report; `stackae ablate --config F --out D --dry-run` prints
# the plan and its FLOP count):
#   classic     sigmoid 784-1000-1000-500, denoising vs random, SGD fine-tuning, 10000 and all
#               labels, 5 seeds                            1 h 00 min measured (20 cells)
#   classic-small-batch  the classic regime with the published recipes' small batches: noise
#               0.1/0.2/0.3 per layer, 15 pretraining epochs, fine-tuning batch 20 with cosine
#               decay, denoising vs xavier (Glorot) random init, all labels, 5 seeds
#                                                          1 h 18 min measured (10 cells)
#   budgets     the classic regime at 100 and 1000 labels, denoising vs xavier (Glorot) random
#               init, 10 seeds                             1 h 05 min measured (40 cells)
#   budgets-large  the budgets regime at 10000 and all labels, 5 seeds (the classic grid with
#               xavier in place of torch's default init)          about 1 hour (estimate)
#   modern      ReLU, Adam + dropout 0.2 + cosine learning-rate decay in fine-tuning, denoising vs
#               kaiming (He) random init, all labels, 5 seeds      59 min measured (10 cells)
#   modern-long the modern regime trained longer with stronger dropout: 60 fine-tuning epochs,
#               dropout 0.5, 5 seeds                 1 h 43 min measured + 14 min pretraining
#   objectives  plain, denoising, sparse, contractive, RBM vs random, all labels, 3 seeds
#                                                          1 h 39 min measured (18 cells)
#   deep-autoencoder  784-1000-500-250-30 RBM stack, unrolled and fine-tuned, beside PCA-30
#               (squared reconstruction error per test image), and the 2-D codes beside PCA's:
#               scripts/reference/deep_autoencoder.py        see runs/reference/deep-autoencoder
set -euo pipefail
cd "$(dirname "$0")/../.."
for name in "${@:-classic classic-small-batch budgets budgets-large modern modern-long objectives deep-autoencoder}"; do
  for n in $name; do
    if [ "$n" = deep-autoencoder ]; then
      python scripts/reference/deep_autoencoder.py --out runs/reference/deep-autoencoder
    else
      stackae ablate --config "scripts/reference/$n.json" --out "runs/reference/$n" --resume
    fi
  done
done

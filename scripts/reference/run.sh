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
#   classic-pretrain-30  classic-small-batch with 30 pretraining epochs per layer
#                                                          see runs/reference/classic-pretrain-30
#   dbn-small-batch  classic-pretrain-30 with RBMs (a DBN) in place of denoising autoencoders,
#               CD-1, Adam 1e-3, 30 epochs per layer           see runs/reference/dbn-small-batch
#   deep-autoencoder  784-1000-500-250-30 RBM stack, unrolled and fine-tuned, beside PCA-30
#               (squared reconstruction error per test image), and the 2-D codes beside PCA's:
#               scripts/reference/deep_autoencoder.py        see runs/reference/deep-autoencoder
#
# Deep-autoencoder variants, run only by name (scripts/reference/deep_autoencoder.py with the
# flags below, into runs/reference/NAME; times in each REPORT.md):
#   deep-autoencoder-long        --rbm-epochs 20 --unroll-epochs 200 --no-2d
#   deep-autoencoder-paper       the paper's recipe: --rbm-epochs 50 --unroll-epochs 200
#                                --untied --linear-code --seeds 0,1 --logistic-pca-steps 1000
#                                (the 2-D codes: seed 0's; logistic PCA-30 beside PCA-30)
# (the unrolled fine-tuning keeps each stack's epoch of lowest validation loss)
#
#   dbn-dropout-probe  a probe of dbn-dropout on this CPU: seed 0, 100 epochs, each arm with
#               two fine-tuning rates (the Sobol start's two points of a log range: 0.34 and
#               2.13 for the DBN, in 0.3 to 3; 0.034 and 0.21 for xavier, in 0.03 to 0.3, as it
#               stayed at chance at the DBN's) in one K=2 loop, the better on validation error
#               read on the test set: runs/reference/dbn-dropout-probe and
#               runs/reference/dbn-dropout-probe-xavier (1 h 02 min and 41 min measured)
# Run only by name (not in the default list: hours on this CPU, some sized for a GPU; what each
# took, or that it has not run, is in its entry):
#   classic-tuned  classic-small-batch with both arms tuned by `stackae tune` on seeds 0 and 1,
#               12 trials per arm: the fine-tuning lr for both, and for the denoising arm the
#               pretraining epochs, lr and noise (classic-tuned.space.json); then 5 seeds. On this
#               CPU, alone, each round pretrains the denoising trial's two stacks together
#               (691-700 s at 30 epochs, 1,198 s at 50) and fine-tunes both arms' trials as one
#               K=4 loop (30 epochs: 1,346-1,414 s): 35-45 min a round, 9-10 hours in all with
#               the final cells; running across sessions (see runs/reference/classic-tuned)
#   budgets-tuned  the budgets experiment (100 and 1000 labels, 10 seeds) with both arms tuned
#               by `stackae tune` on seeds 0 and 1, 12 trials per arm and budget: fine-tuning lr,
#               batch size (10, 32, 128), epochs (30, 100), dropout (0, 0.2, 0.5) and weight
#               decay (0, 1e-4, 1e-3); the stacks pretrained once, or copied from budgets'
#               folder where it holds them (budgets-tuned.space.json).
#               Its --dry-run: 0.85 to 2.5 PFLOP
#               (trials 5.3e2 to 1.8e3 TFLOP, final 3.2e2 to 7.3e2): 5 to 14 hours at the
#               ~50 GFLOP/s an AVX2-only host of this machine type sustains (its RBM pretraining)
#   budgets-10k-tuned  budgets-tuned at 10000 labels (10 seeds, the same space and 12 trials
#               per arm): its dry run 0.5 to 1.3 PFLOP (trials 2.6e2 to 8.8e2 TFLOP, final
#               2.3e2 to 4.3e2 with its 10 stacks), about as much as one budget of
#               budgets-tuned (an epoch is 10,000 examples at either budget): hours on this CPU
#   budgets-all-tuned  budgets-tuned at all labels (10 seeds, the same space and 12 trials per
#               arm). Its --dry-run: 1.6 to 4.8 PFLOP (trials 1.1e3 to 3.5e3 TFLOP, final
#               4.9e2 to 1.3e3 with its 10 stacks); a trial at batch 10 and 100 epochs on all
#               labels makes 500,000 steps: a GPU job
#   dbn-dropout  dbn-small-batch fine-tuned with dropout (Hinton et al. 2012): 200 epochs,
#               batch 100, input dropout 0.2; both arms tuned on seeds 0 and 1, 12 trials: lr,
#               each arm in its own range (DBN 0.1 to 1, xavier 0.03 to 0.3: where
#               dbn-dropout-probe found each arm's best, xavier at chance from 0.34 up), hidden
#               dropout (0.3, 0.5) and max-norm (off, 4, 8: seed 0's first RBM layer
#               starts with unit norms 1.3 to 6.4, median 2.8) (dbn-dropout.space.json); the
#               stacks copied from dbn-small-batch's folder where it holds them. Its
#               --dry-run: ~8 PFLOP; a probe's epochs here took 61 s each for one network
#               (sharing the CPU with another run), and it makes 11,600 network-epochs: a GPU job
#   dbn-tuned  dbn-small-batch with both arms tuned by `stackae tune` on seeds 0 and 1, 6 trials
#               per arm: fine-tuning lr (0.03 to 0.3) and weight decay (0, 1e-5, 1e-4, 1e-3)
#               (dbn-tuned.space.json); the stacks are dbn-small-batch's, copied when that folder
#               holds them (--stacks-from checks their settings), else pretrained. On this CPU:
#               24 trial fine-tunes (four at a time, 16,666 s in all) and 6 final ones (six at
#               a time, 4,567 s; the tuning seeds' 4 cells are the chosen trials' runs): about
#               5 h 55 min measured (see runs/reference/dbn-tuned)
#   dbn-tuned-wide  dbn-tuned again with the fine-tuning lr in 0.2 to 0.6 (dbn-tuned chose
#               0.28 at the top of its range for both arms, validation error falling with the
#               rate; tries from 0.2 to 2 and to 1 were stopped when their first trials, 1.42
#               and 0.79, left the DBN arm's loss at 70 to 160 after one epoch) and weight
#               decay fixed at its choice, 1e-5; 4 trials per arm on seeds 0 and 1
#               (dbn-tuned-wide.space.json). Seed 0's stack is copied from dbn-dropout-probe's
#               folder (the same pretraining), the others pretrained (~14 min each here)
set -euo pipefail
cd "$(dirname "$0")/../.."
for name in "${@:-classic classic-small-batch classic-pretrain-30 dbn-small-batch budgets budgets-large modern modern-long objectives deep-autoencoder}"; do
  for n in $name; do
    if [ "$n" = deep-autoencoder ]; then
      python scripts/reference/deep_autoencoder.py --out runs/reference/deep-autoencoder
    elif [ "$n" = deep-autoencoder-long ]; then
      python scripts/reference/deep_autoencoder.py --rbm-epochs 20 --unroll-epochs 200 --no-2d \
        --out "runs/reference/$n"
    elif [ "$n" = deep-autoencoder-paper ]; then
      python scripts/reference/deep_autoencoder.py --rbm-epochs 50 --unroll-epochs 200 \
        --untied --linear-code --seeds 0,1 --logistic-pca-steps 1000 --out "runs/reference/$n"
    elif [ "$n" = dbn-dropout-probe ]; then  # dbn-dropout's arms on seed 0, 100 epochs
      for arm in rbm xavier; do  # xavier stayed at chance at rbm's rates: ten times lower
        rates='"low": 0.3, "high": 3.0'
        if [ $arm = xavier ]; then rates='"low": 0.03, "high": 0.3'; fi
        stackae tune --config scripts/reference/dbn-dropout.json --inits $arm --seeds 0 \
          --finetune-epochs 100 --trials 2 --tune-seeds 0 --trials-at-once 2 --resume \
          --space "{\"finetune_lr\": {$rates, \"log\": true}}" \
          --out "runs/reference/$n$([ $arm = xavier ] && echo -xavier)"
      done
    elif [ -f "scripts/reference/$n.space.json" ]; then  # a tuned experiment
      trials=12; if [ "$n" = dbn-tuned ]; then trials=6; fi  # sized for this CPU
      if [ "$n" = dbn-tuned-wide ]; then trials=4; fi
      stackae tune --config "scripts/reference/$n.json" --space "scripts/reference/$n.space.json" \
        --trials "$trials" --tune-seeds 0,1 --out "runs/reference/$n" --resume
    else
      stackae ablate --config "scripts/reference/$n.json" --out "runs/reference/$n" --resume
    fi
  done
done

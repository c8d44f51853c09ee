#!/usr/bin/env bash
# Issue 15's GPU measurements as one prepared pass, for a lent GPU machine with little time on it
# (the device tool: about 15 minutes a task, machine start included). Two phases of about
# 7 minutes each (stage limits add up to 10), run one per call, e.g. with timeout_s 600:
#
#   bash scripts/gpu_check.sh speed [OUT]      # compile tests, bench, eager vs compiled steps,
#                                             # the --preset full grid, one-epoch pretraining,
#                                             # the trivial run's fixed cost
#   bash scripts/gpu_check.sh precision [OUT]  # what pruned networks still cost (bench
#                                             # --stops, K 20); float32 / tf32 / bfloat16:
#                                             # --preset full's network, all labels, seeds 0-4,
#                                             # both arms
#
# OUT defaults to $OUT (the device tool's folder that comes back), else ./gpu-check. Every stage
# has its own time limit and leaves its output in OUT as it ends (a stage out of time says so in
# log.txt and the next one starts). Uses python3 from PATH (or $PYTHON) with PYTHONPATH at this
# checkout, so the project need not be installed there. The tests stage needs pytest, which the
# lent machine lacks: install it here with `pip install --target .pylib pytest` and carry .pylib
# (run's carry: [".pylib"]); the script puts .pylib on PYTHONPATH when it is there.
set -uo pipefail
cd "$(dirname "$0")/.."
phase=${1:-speed}
if [ "$phase" != speed ] && [ "$phase" != precision ]; then
  echo "usage: scripts/gpu_check.sh speed|precision [OUT]" >&2
  exit 2
fi
out=$(mkdir -p "${2:-${OUT:-gpu-check}}" && cd "${2:-${OUT:-gpu-check}}" && pwd)
runs=$(mktemp -d)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
[ -d .pylib ] && PYTHONPATH=$PYTHONPATH:$PWD/.pylib
py=${PYTHON:-python3}

stage() {  # stage NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2 start rc
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$out/log.txt"
  start=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - start ))s" | tee -a "$out/log.txt"
  tail -n 12 "$out/$name.txt"
}

{ nvidia-smi; $py -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"; } \
  > "$out/machine.txt" 2>&1
case $phase in
  speed)
    stage tests 120 $py -m pytest -q -p no:cacheprovider tests/test_compile.py
    stage bench 100 $py scripts/bench.py --device cuda --ks 1,10,20,80 --json "$out/bench.json"
    stage steps 120 $py scripts/bench.py --device cuda --steps 20,128 --ks 10 --steps-only \
      --json "$out/steps.json"
    stage grid 200 /usr/bin/time -v $py -m stackae ablate --preset full --device cuda --quiet \
      --out "$runs/full"
    cp "$runs/full/results.csv" "$out/grid-results.csv" 2>/dev/null
    stage pretrain 40 /usr/bin/time -v $py -m stackae pretrain --layers 1000,1000,500 --epochs 1 \
      --device cuda --quiet --out "$runs/one-epoch"
    stage trivial 20 /usr/bin/time -v $py -m stackae pretrain --epochs 0 --layers 16 \
      --train-size 1000 --device cuda --quiet --out "$runs/trivial"
    ;;
  precision)
    stage stops 90 $py scripts/bench.py --device cuda --ks 20 --stops --json "$out/stops.json"
    for p in float32 tf32 bfloat16; do
      stage "precision-$p" 140 /usr/bin/time -v $py -m stackae ablate --preset full --device cuda \
        --seeds 0,1,2,3,4 --labels all --precision "$p" --quiet --out "$runs/$p"
      cp "$runs/$p/results.csv" "$out/precision-$p.csv" 2>/dev/null
      cp "$runs/$p/REPORT.md" "$out/precision-$p.md" 2>/dev/null
    done
    ;;
esac
echo "done: $out" | tee -a "$out/log.txt"

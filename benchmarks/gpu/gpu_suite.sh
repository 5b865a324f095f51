#!/usr/bin/env bash
# The GPU measurements benchmarks/README.md still lists as not measured, in order of priority,
# within a wall-time budget: each step runs only if its usual time still fits, under a timeout
# of what is left, and writes <name>.txt (its command and output) and, where the script has
# one, <name>.json to the output folder. Skipped steps are listed in skipped.txt.
#
#   bash benchmarks/gpu/gpu_suite.sh [MINUTES (default 10)] [OUT (default benchmarks/gpu/results)]
#
# It runs the benchmarks as modules (python -m benchmarks.<folder>.<name>) from the repository
# root, whatever the folder it is started from: a relative OUT is relative to the root.
#
# gpu_check's agreement part checks the CUDA graphs the other steps use; the graph tests
# come after the two measurements they would not change.
#
# Needs one CUDA device, its machine's CPU cores for evaluation and data processes, and the
# project installed with its test extras (pytest for the CUDA graph tests).
set -u
MINUTES=${1:-10}
OUT=${2:-benchmarks/gpu/results}
cd "$(dirname "$0")/../.." || exit 1
source benchmarks/gpu/budget_steps.sh

# Usual times from the first run (one H200, 2026-12-04, benchmarks/gpu/results/): gpu_check took
# 164 s, a failed capture (1.6M graph+compile) having stopped every later variant (mended: they
# run now, the compiled ones with ~40 s of warm-up each); a 16-trial
# study of 3,000-update runs took 295 s one by one alone, so batched_trials runs 1,500 updates.
step gpu_check 270 python -m benchmarks.gpu.gpu_check --json "$OUT/gpu_check.json"
step batched_trials 240 python -m benchmarks.speed.batched_trials --device cuda --trials 16 --batch 16 --profile cpu \
    --steps 1500 --json "$OUT/batched_trials.json"
step eval_members 120 python -m benchmarks.speed.eval_speed --members 16 --episodes 8 --workers 15 --max-steps 500 \
    --repeats 1 --json "$OUT/eval_speed_members.json"
step held_out 60 python -m benchmarks.speed.held_out_speed --device cuda --k 16 --json "$OUT/held_out_speed.json"
step graph_tests 120 python -m pytest -q tests/test_graphs.py
step batched_workers 300 python -m benchmarks.speed.batched_trials --device cuda --trials 16 --batch 4 --workers 4 \
    --skip-one-by-one --profile cpu --json "$OUT/batched_trials_workers.json"
step data_speed 120 python -m benchmarks.speed.data_speed --workers 16 --episodes 160 --json "$OUT/data_speed.json"
step eval_speed 120 python -m benchmarks.speed.eval_speed --episodes 50 --workers 15 --json "$OUT/eval_speed.json"
# When the control engages at the paper's preset and rate (alpha from 1.0), over run lengths a CPU
# cannot reach; its points join python -m benchmarks.learning.engagement_model --fit.
step engagement_04M 480 python -m benchmarks.learning.engagement --grid control --control-size 0.4M --control-lr 1e-4 \
    --alpha-inits 1.0 --rhos 0.9 --steps 20000,60000 --episodes 40 --log-points 100 --json "$OUT/engagement_04M.json"
echo "results in $OUT"

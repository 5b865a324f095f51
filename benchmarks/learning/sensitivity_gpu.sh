#!/usr/bin/env bash
# The H̄ sensitivity measurements that need a GPU, in order of priority within a wall-time
# budget (each step runs only if its usual time still fits; see ../gpu/budget_steps.sh). All
# train each layout's runs as one batch (`python -m benchmarks.learning.sensitivity --batch`) on
# the `cpu` profile's data.
#
#   bash benchmarks/learning/sensitivity_gpu.sh [MINUTES (default 10)] [OUT (default
#        benchmarks/learning/results/gpu)] [DATA_DIR (default data)]
#
# It runs from the repository root, whatever the folder it is started from: relative OUT and
# DATA_DIR are relative to the root.
#
# 0. collapse:  where free attention collapses (docs/collapse.md): cube-double task 1, the paper's
#               widths at depth 2 (1.6M = width 256, 7M = 512) and a 4-layer critic (w256-d4-h4), the
#               published rates and alpha (from 1.0), control on at the default target (rho 0.6)
#               and at the published table against control off, 5 seeds, 20,000 updates, 50
#               evaluation episodes; then FQL's MLP critic (`fql`) on the same data and seeds.
#               2 CPU cores reached only 3,000 updates of the 0.03M and w32-d4 critics.
#               The usual times of these steps are estimates (no such batch has run yet).
# 1. published: cube-single with the published configuration (alpha from 1.0, the published
#               rates) at rho 0.3-0.95, 2 seeds, 30,000 updates: does H̄ matter where the
#               paper's own settings leave the control to engage late?
# 2. scene:     scene task 1, rho 0.3-0.95 + the published table, 2 seeds, 30,000 updates (2 CPU
#               cores reached 11,000 for three of them).
# 3. sharing:   scene task 1, one temperature per (layer, group) / layer / critic at the
#               published table and rho 0.9, 2 seeds, 11,000 updates (cube-single's layouts
#               were compared at 11,000 updates on 2 CPU cores).
# 4. longer:    cube-single, rho 0.3 / 0.6 / 0.9 x 4 seeds, 60,000 updates: twice the longest
#               CPU runs, where rho 0.3 and 0.9 tied at 30,000 (docs/sensitivity.md).
# Usual times: 12 members x 11,000 updates of cube-single took 106 s on one H200 (with the
# final evaluation); the others are scaled from it by member-updates. Generating a missing
# dataset adds about a minute per domain: carry DATA_DIR's generated/ files where you can.
set -u
MINUTES=${1:-10}
OUT=${2:-benchmarks/learning/results/gpu}
DATA=${3:-data}
cd "$(dirname "$0")/../.." || exit 1
source benchmarks/gpu/budget_steps.sh
CUBE=cube-single-play-singletask-task1-v0
run() {  # run NAME SECONDS ARGS...: one sensitivity run writing OUT/NAME.{txt,json,png}
    local name=$1 usual=$2
    shift 2
    step "$name" "$usual" python -m benchmarks.learning.sensitivity --batch --eval-episodes 20 --data-dir "$DATA" \
        --out "runs/sensitivity-gpu/$name" --json "$OUT/$name.json" --png "$OUT/$name.png" "$@"
}
DOUBLE=cube-double-play-singletask-task1-v0
for shape in 1.6M w256-d4-h4 7M; do
    run "collapse-$shape" 600 --task $DOUBLE --rhos 0.6,published,off --seeds 0,1,2,3,4 --steps 20000 \
        --eval-every 10000 --eval-episodes 50 --agent "size=$shape"
done
run collapse-fql 200 --task $DOUBLE --rhos fql --seeds 0,1,2,3,4 --steps 20000 --eval-every 10000 \
    --eval-episodes 50 --agent size=1.6M
run published 300 --task $CUBE --rhos 0.3,0.45,0.6,0.75,0.9,0.95 --seeds 0,1 --steps 30000 --eval-every 30000 \
    --agent alpha_init=1.0
run scene 380 --task scene-play-singletask-task1-v0 --rhos 0.3,0.45,0.6,0.75,0.9,0.95,published --seeds 0,1 \
    --steps 30000 --eval-every 30000
run sharing 270 --task scene-play-singletask-task1-v0 --rhos 0.9,published --sharings layer_group,layer,global \
    --seeds 0,1 --steps 11000 --eval-every 11000
run longer 580 --task $CUBE --rhos 0.3,0.6,0.9 --seeds 0,1,2,3 --steps 60000 --eval-every 60000
echo "results in $OUT"

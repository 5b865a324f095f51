#!/usr/bin/env bash
# The issue-4 comparison on this machine: default vs per-task tuned constant vs Optuna-learned
# knots vs the feedback and population controllers vs a leave-one-domain-out transferred
# schedule, on three tasks of three domains, 3 seeds each, the smallest (`smoke`) profile.
#
#   bash benchmarks/learning/compare_report.sh [WORKDIR]
#
# WORKDIR (default /tmp/tql-compare) holds the data, the studies' SQLite file and the runs;
# re-running continues where it stopped. The report (report.md, report.png, data.json) is
# copied to benchmarks/learning/results/compare/.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-/tmp/tql-compare}"
tasks="cube-double-play-singletask-task1-v0,scene-play-singletask-task1-v0,puzzle-3x3-play-singletask-task1-v0"
mkdir -p "$work" && cd "$work"

# 1. The README's main job: a constant-rho study over all 25 tasks ("tuned" reads its best
#    rho per task; "transfer" pools the other domains' best schedules).
tql-tune run --tasks all --study tql --quiet
# 2. An Optuna-learned schedule (rho at progress 0, 0.5, 1) per compared task.
tql-tune run --tasks "$tasks" --study knots --spec "$repo/studies/knots.toml" --quiet
# 3. Every approach on the same tasks, evaluation seeds (100, 101, 102) and step budget.
tql-tune compare --tasks "$tasks" --study tql --knots-study knots --seeds 3 \
    --approaches default,tuned,knots,feedback,population,transfer --out compare
mkdir -p "$repo/benchmarks/learning/results/compare"
cp compare/report.md compare/report.png compare/data.json "$repo/benchmarks/learning/results/compare/"

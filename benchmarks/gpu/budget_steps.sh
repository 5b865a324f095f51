# Sourced by the GPU scripts that run steps within a wall-time budget (gpu_suite.sh,
# ../learning/sensitivity_gpu.sh), from the repository root (where python -m finds the
# benchmarks). Expects MINUTES and OUT set; defines step().
mkdir -p "$OUT"
: > "$OUT/skipped.txt"
: > "$OUT/commands.txt"
DEADLINE=$(( $(date +%s) + MINUTES * 60 ))

# step NAME SECONDS COMMAND...: run COMMAND if SECONDS (its usual time) still fit the budget,
# under a timeout of what is left; its command and output go to OUT/NAME.txt. With
# GPU_STEPS_DRY=1 every command is only listed, one per line, in OUT/commands.txt (the tests
# check them on a CPU).
step() {
    local name=$1 usual=$2
    shift 2
    if [ "${GPU_STEPS_DRY:-0}" = 1 ]; then
        printf '%q ' "$@" >> "$OUT/commands.txt" && echo >> "$OUT/commands.txt"
        return
    fi
    local left=$(( DEADLINE - $(date +%s) ))
    if (( left < usual )); then
        echo "$name: skipped, needs about ${usual} s, ${left} s left" | tee -a "$OUT/skipped.txt"
        return
    fi
    echo "== $name (up to ${left} s)"
    echo "\$ $*" > "$OUT/$name.txt"
    timeout "$left" "$@" 2>&1 | grep -v -e "gym.logger.warn" -e "UserWarning" -e "GLFWError" | tee -a "$OUT/$name.txt"
}

#!/usr/bin/env bash
# Every pending GPU measurement: the suite lives in benchmarks/gpu/; this path keeps working.
#   bash benchmarks/gpu_suite.sh [MINUTES (default 10)] [OUT (default benchmarks/gpu/results)]
exec bash "$(dirname "$0")/gpu/gpu_suite.sh" "$@"

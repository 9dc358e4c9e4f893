"""Which XLA:CPU settings help jaxkd's step: each variant against PyTorch in its own process.

    python experiments/bench/xla_flags.py --model resnet18 --steps 3 \
        --out experiments/results/bench/xla_flags_cpu_resnet18.json

XLA reads XLA_FLAGS once per process, so every variant runs `compare_torch.py` in a fresh
process; the PyTorch step timed in that same process is the yardstick that cancels the load of
a shared machine (compare ``jax_over_torch`` across variants, not raw milliseconds). Variants
run in the listed order, then again in reverse when ``--repeats 2``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# (name, XLA_FLAGS, extra compare_torch.py arguments)
VARIANTS = [
    ("xla default", "", ["--conv", "xla"]),
    ("fast CPU convolutions (taps kernel grad)", "", ["--conv", "fast"]),
    ("fast + xnnpack", "--xla_cpu_use_xnnpack=true", ["--conv", "fast"]),
    ("fast + ynn conv fusion",
     "--xla_cpu_experimental_ynn_fusion_type=individual_convolution", ["--conv", "fast"]),
    ("fast + xnn graph fusion",
     "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
     ["--conv", "fast"]),
    ("fast + onednn dot fusion", "--xla_cpu_experimental_onednn_fusion_type=dot",
     ["--conv", "fast"]),
    ("fast + fast math", "--xla_cpu_enable_fast_math=true", ["--conv", "fast"]),
    ("ynn conv fusion", "--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
     ["--conv", "xla"]),
    ("fast + ynn conv + xnnpack",
     "--xla_cpu_experimental_ynn_fusion_type=individual_convolution --xla_cpu_use_xnnpack=true",
     ["--conv", "fast"]),
    ("fast + ynn conv + fast math",
     "--xla_cpu_experimental_ynn_fusion_type=individual_convolution "
     "--xla_cpu_enable_fast_math=true", ["--conv", "fast"]),
    ("fast + ynn conv, torch channels_last",
     "--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
     ["--conv", "fast", "--channels-last"]),
]


def _run(name, flags, extra, args) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "out.json")
    command = [sys.executable, os.path.join(HERE, "compare_torch.py"), "--model", args.model,
               "--batch-size", str(args.batch_size), "--methods", args.methods,
               "--steps", str(args.steps), "--warmup", "1", "--label", name, "--out", out,
               *extra]
    env = {**os.environ, "XLA_FLAGS": flags}
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
      return {"label": name, "xla_flags": flags, "error": proc.stderr.strip()[-2000:]}
    with open(out) as f:
      result = json.load(f)
  result["xla_flags"] = flags
  for method, entry in result["methods"].items():
    print(f"{name:<40} {method}: jax {1e3 * entry['jax_median_s']:.0f} ms, torch "
          f"{1e3 * entry['torch_median_s']:.0f} ms, jax/torch {entry['jax_over_torch']:.3f}, "
          f"jax CPU {1e3 * entry['jax_cpu_median_s']:.0f} ms, torch CPU "
          f"{1e3 * entry['torch_cpu_median_s']:.0f} ms", flush=True)
  return result


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", default="resnet18")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--methods", default="ce")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=1, choices=(1, 2))
  parser.add_argument("--only", default="", help="comma-separated variant names to run")
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  chosen = [v for v in VARIANTS if not args.only or v[0] in args.only.split(",")]
  order = chosen + (chosen[::-1] if args.repeats == 2 else [])
  runs = [_run(*variant, args) for variant in order]
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"command": " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:]),
               "runs": runs}, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())

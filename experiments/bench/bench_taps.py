"""``jaxkd bench`` with the per-tap kernel gradient of cpu_conv.py patched into the model zoo.

    python experiments/bench/bench_taps.py --model resnet18 --batch-size 128 --methods all \
        --steps 5 --out experiments/results/bench/bench_cpu_resnet18_taps.json

Takes the flags of ``jaxkd bench``; the JSON records ``"conv"`` and this command.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_conv  # noqa: E402

from jaxkd import bench  # noqa: E402


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  bench.add_arguments(parser)
  args = parser.parse_args()
  cpu_conv.patch_jaxkd_models()
  command = " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:])
  return bench.main(args, extra={
      "command": command,
      "conv": "taps: kernel gradients as per-tap matrix products (experiments/bench/cpu_conv.py)"})


if __name__ == "__main__":
  sys.exit(main())

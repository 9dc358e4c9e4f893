"""Renders the JSON of one `gpu.sh` run into the README's performance table.

    python experiments/bench/render_gpu_table.py DIR                    # print it (dry run)
    python experiments/bench/render_gpu_table.py DIR --readme README.md # replace it there
    python experiments/bench/render_gpu_table.py DIR --check            # fields only

``SCHEMA`` names every stage's JSON file and the fields this table reads from it; `check`
reports what a stage's JSON lacks (the suite checks a recorded `gpu.sh DIR smoke` run,
experiments/results/bench/gpu_smoke_cpu, with this), and the table is rendered from exactly
those fields. With ``--readme`` the text between ``BEGIN`` and ``END`` (marker comments) is
replaced, so a rerun replaces the last table. A
stage whose JSON is absent (cut short by its time limit, or failed: see ``gpu_log.txt``) gets
a line saying so.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

BEGIN, END = "<!-- gpu-table:begin -->", "<!-- gpu-table:end -->"
_MACHINE = ["command", "machine.device", "machine.cpu", "machine.cpu_count",
            "machine.versions.jax", "machine.versions.jaxlib", "machine.versions.flax",
            "machine.versions.torch"]
_BENCH = _MACHINE + ["model", "batch_size", "dtype", "peak_source", "methods.*.median_s",
                     "methods.*.images_per_s", "methods.*.ratio_to_ce", "methods.*.mfu"]
# stage -> (its JSON file in the output directory, the fields the table reads; "*": every
# entry of a dict or list).
SCHEMA = {
    "bench_core": ("bench_core.json", _BENCH),
    "epoch": ("epoch.json", _MACHINE + [
        "model", "batch_size", "dtype", "steps_per_dispatch", "num_examples", "epochs",
        "images_per_s", "epoch_s_cifar", "epoch_s_cifar_arithmetic",
        *[f"{run}.{field}" for run in ("cold", "warm") for field in (
            "wall_time_s", "steps", "train_images_per_s", "steady_images_per_s",
            "eval_images_per_s",
            "time_split_s.data_s", "time_split_s.step_s", "time_split_s.eval_s",
            "time_split_s.checkpoint_s", "other_s")]]),
    "imagenet_host": ("imagenet_host.json", _MACHINE + [
        "size", "batch_size", "dtype", "threads", "streamed.*.threads",
        "streamed.*.images_per_s",
        "decode.per_core_images_per_s", "decode.all_cores_images_per_s", "decode.workers",
        "steps.*.model", "steps.*.images_per_s", "host_over_step"]),
    "torch": ("torch.json", _MACHINE + [
        "model", "batch_size", "dtype", "torch_device", "methods.*.jax_median_s",
        "methods.*.torch_median_s", "methods.*.jax_over_torch"]),
    "kd_teacher": ("kd_teacher.json", _MACHINE + [
        "model", "batch_size", "dtype", "ce.median_s", "frozen.status", "frozen.median_s",
        "frozen.ratio_to_ce", "cached.status", "cached.median_s", "cached.ratio_to_ce",
        "cached.ratio_to_frozen"]),
    "packing_small_cnn": ("packing_small_cnn.json", _MACHINE + [
        "model", "batch_size", "results.*.num_seeds", "results.*.strategy",
        "results.*.speedup", "results.*.packed_images_per_s"]),
    "packing_mlp": ("packing_mlp.json", _MACHINE + [
        "model", "batch_size", "results.*.num_seeds", "results.*.strategy",
        "results.*.speedup", "results.*.packed_images_per_s"]),
    "packed_loop": ("packed_loop.json", _MACHINE + [
        "model", "batch_size", "steps", "results.*.num_seeds", "results.*.strategy",
        "results.*.wall_per_seed_s", "results.*.to_one_seed"]),
    "bench_rest": ("bench_rest.json", _BENCH),
}


def missing(obj, path: str) -> list[str]:
  """The fields of ``path`` (dotted, ``*`` for every entry) absent from ``obj``."""
  head, _, rest = path.partition(".")
  if head == "*":
    if not isinstance(obj, (dict, list)) or not obj:
      return [path + " (no entries)"]
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    return [f"{key}.{m}" for key, value in items for m in (missing(value, rest) if rest else [])]
  if not isinstance(obj, dict) or head not in obj:
    return [path]
  return [f"{head}.{m}" for m in missing(obj[head], rest)] if rest else []


def load(directory: str) -> dict:
  """stage -> its JSON (None where the file is absent)."""
  out = {}
  for stage, (name, _) in SCHEMA.items():
    path = os.path.join(directory, name)
    if os.path.exists(path):
      with open(path) as f:
        out[stage] = json.load(f)
    else:
      out[stage] = None
  return out


def check(directory: str) -> list[str]:
  """Every problem of the directory's JSON against `SCHEMA`: absent files, absent fields."""
  problems = []
  for stage, result in load(directory).items():
    name, fields = SCHEMA[stage]
    if result is None:
      problems.append(f"{name}: absent")
      continue
    problems += [f"{name}: no {m}" for field in fields for m in missing(result, field)]
  return problems


def _num(value, digits: int = 1, scale: float = 1.0) -> str:
  return "-" if value is None else f"{scale * value:,.{digits}f}"


def _link(directory: str, name: str, root: str) -> str:
  path = os.path.relpath(os.path.join(directory, name), root)
  return f"[{name}]({path})" if not path.startswith("..") else f"`{name}`"


def render(directory: str, root: str = ".") -> str:
  """The table's Markdown; links to the JSON relative to ``root`` (the README's folder)."""
  results = load(directory)
  first = next((r for r in results.values() if r is not None), None)
  if first is None:
    return f"No JSON of a `gpu.sh` run in `{directory}`."
  machine = first["machine"]
  versions = ", ".join(f"{k} {machine['versions'][k]}" for k in ("jax", "jaxlib", "flax", "torch"))
  lines = [f"Device: {machine['device']} ({machine['cpu_count']} host cores: "
           f"{machine['cpu']}); {versions}. Every number below is from one `bash "
           f"experiments/bench/gpu.sh` call; each stage's JSON holds its exact command."]
  absent = [SCHEMA[s][0] for s, r in results.items() if r is None]
  if absent:
    lines.append(f"Stages without JSON (cut short or failed, see gpu_log.txt): "
                 f"{', '.join(absent)}.")
  link = lambda stage: _link(directory, SCHEMA[stage][0], root)
  benches = [(s, results[s]) for s in ("bench_core", "bench_rest") if results[s]]
  if benches:
    r = benches[0][1]
    lines += ["", f"Train step per method ({r['model']}, batch {r['batch_size']}, {r['dtype']}, "
              f"CIFAR-shaped data on the device; to ce: within the same file; MFU over "
              f"{r['peak_source']}; "
              + ", ".join(link(s) for s, _ in benches) + "):", "",
              "| method | ms / step | images/s | to ce | MFU % |", "|---|---|---|---|---|"]
    seen = set()
    for _, r in benches:
      for label, m in r["methods"].items():
        if label not in seen:
          seen.add(label)
          lines.append(f"| {label} | {_num(m['median_s'], 2, 1e3)} | "
                       f"{_num(m['images_per_s'], 0)} | {_num(m['ratio_to_ce'], 3)} | "
                       f"{_num(m['mfu'], 1, 100)} |")
  r = results["epoch"]
  if r:
    lines += ["", f"End to end through `jaxkd train` ({r['model']}, batch {r['batch_size']}, "
              f"{r['dtype']}, steps_per_dispatch {r['steps_per_dispatch']}, {r['epochs']} "
              f"epochs of {r['num_examples']} CIFAR-shaped examples, evaluation and a "
              f"checkpoint after each; {link('epoch')}); loop seconds by where they went "
              "(cold: compiling; warm: programs from the compilation cache):", "",
              "| run | steady images/s | train images/s | eval images/s | data s | step s | "
              "eval s | checkpoint s | other s | wall s |", "|---" * 10 + "|"]
    for run in ("cold", "warm"):
      x, split = r[run], r[run]["time_split_s"]
      lines.append(f"| {run} | {_num(x['steady_images_per_s'], 0)} | "
                   f"{_num(x['train_images_per_s'], 0)} | "
                   f"{_num(x['eval_images_per_s'], 0)} | " + " | ".join(
                       _num(split[k], 2) for k in ("data_s", "step_s", "eval_s",
                                                   "checkpoint_s"))
                   + f" | {_num(x['other_s'], 2)} | {_num(x['wall_time_s'], 1)} |")
    lines += ["", "Steady: the log intervals without the start or an evaluation; train: all "
              "training steps, the first dispatch's compiling (cold) or loading (warm) "
              f"included. A full CIFAR epoch (50,000 + 10,000 test images, one checkpoint) at "
              f"the warm rates: {_num(r['epoch_s_cifar'], 1)} s ({r['epoch_s_cifar_arithmetic']})."]
  r = results["imagenet_host"]
  if r:
    models = list(r["steps"])
    lines += ["", f"ImageNet input on the host's cores against the train step "
              f"({r['size']}x{r['size']}, batch {r['batch_size']}, {r['dtype']}; "
              f"{link('imagenet_host')}):", "",
              "| | images/s | " + " | ".join(f"/ {m} step" for m in models) + " |",
              "|---" * (2 + len(models)) + "|"]
    for name, entry in r["streamed"].items():
      ratios = [entry["images_per_s"] / r["steps"][m]["images_per_s"] for m in models]
      lines.append(f"| streamed tiny ImageNet, threads: {entry['threads']} | "
                   f"{_num(entry['images_per_s'], 0)} | "
                   + " | ".join(_num(x, 2) for x in ratios) + " |")
    d = r["decode"]
    for label, rate in (("decode + train view, 1 core (CPU time)", d["per_core_images_per_s"]),
                        (f"decode + train view, {max(d['workers'])} processes",
                         d["all_cores_images_per_s"])):
      lines.append(f"| {label} | {_num(rate, 0)} | " + " | ".join(
          _num(rate / r["steps"][m]["images_per_s"], 2) for m in models) + " |")
    for m in models:
      lines.append(f"| {m} train step (data on the device) | "
                   f"{_num(r['steps'][m]['images_per_s'], 0)} | "
                   + " | ".join("" for _ in models) + " |")
  r = results["torch"]
  if r:
    lines += ["", f"jaxkd against PyTorch on the same device ({r['model']}, batch "
              f"{r['batch_size']}, {r['dtype']}, PyTorch on {r['torch_device']}; "
              f"{link('torch')}):", "",
              "| method | jaxkd ms | PyTorch ms | jaxkd / PyTorch |", "|---|---|---|---|"]
    for label, m in r["methods"].items():
      lines.append(f"| {label} | {_num(m['jax_median_s'], 2, 1e3)} | "
                   f"{_num(m['torch_median_s'], 2, 1e3)} | {_num(m['jax_over_torch'], 3)} |")
  r = results["kd_teacher"]
  if r:
    lines += ["", f"KD step by where the teacher's outputs come from ({r['model']}, batch "
              f"{r['batch_size']}, {r['dtype']}; {link('kd_teacher')}):", "",
              "| teacher | ms / step | to ce | to frozen |", "|---|---|---|---|",
              f"| none (ce) | {_num(r['ce']['median_s'], 2, 1e3)} | 1.000 | |"]
    for name in ("frozen", "cached"):
      x = r[name]
      cells = (f"{_num(x['median_s'], 2, 1e3)} | {_num(x['ratio_to_ce'], 3)} | "
               f"{_num(x.get('ratio_to_frozen'), 3) if name == 'cached' else '1.000'}")
      lines.append(f"| {name} | {cells} |" if x["median_s"] is not None
                   else f"| {name} | {x['status']} | | |")
  packs = [(s, results[s]) for s in ("packing_small_cnn", "packing_mlp") if results[s]]
  if packs:
    lines += ["", "Seed packing, S seeds in one step against S separate steps ("
              + ", ".join(link(s) for s, _ in packs) + "):", "",
              "| model | S | strategy | speedup | packed images/s |", "|---|---|---|---|---|"]
    for _, r in packs:
      for x in r["results"]:
        lines.append(f"| {r['model']} | {x['num_seeds']} | {x['strategy']} | "
                     f"{_num(x['speedup'], 2)}x | {_num(x['packed_images_per_s'], 0)} |")
  r = results["packed_loop"]
  if r:
    lines += ["", f"Seeds packed through the training loop (`jaxkd report run --pack S`; "
              f"{r['model']}, batch {r['batch_size']}, {r['steps']} steps of the Fashion-MNIST "
              f"study's run with its evaluations and checkpoints, compilation included; "
              f"{link('packed_loop')}):", "",
              "| S | strategy | wall s per seed | to one seed |", "|---|---|---|---|"]
    for x in r["results"]:
      lines.append(f"| {x['num_seeds']} | {x['strategy']} | {_num(x['wall_per_seed_s'], 1)} | "
                   f"{_num(x['to_one_seed'], 2)} |")
  return "\n".join(lines)


def replace_between_markers(text: str, table: str, path: str = "README") -> str:
  """``text`` with everything between `BEGIN` and `END` replaced by ``table``."""
  if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
    raise ValueError(f"{path}: needs one {BEGIN} line and one {END} line after it")
  head, rest = text.split(BEGIN)
  _, tail = rest.split(END)
  return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("directory", help="the OUT_DIR of a gpu.sh run")
  parser.add_argument("--readme", default=None,
                      help="replace the table between the marker comments of this file")
  parser.add_argument("--check", action="store_true",
                      help="only list what the JSON lacks; exit 1 if anything")
  args = parser.parse_args(argv)
  problems = check(args.directory)
  if args.check:
    print("\n".join(problems) or "every stage's JSON has every field the table reads")
    return 1 if problems else 0
  for problem in problems:
    print(f"warning: {problem}", file=sys.stderr)
  root = os.path.dirname(os.path.abspath(args.readme)) if args.readme else "."
  try:
    table = render(args.directory, root)
  except (KeyError, TypeError) as err:
    print(f"error: a stage's JSON lacks a field the table reads ({err!r}); run --check",
          file=sys.stderr)
    return 1
  if args.readme is None:
    print(table)
    return 0
  with open(args.readme) as f:
    text = f.read()
  try:
    text = replace_between_markers(text, table, args.readme)
  except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  with open(args.readme, "w") as f:
    f.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())

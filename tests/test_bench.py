"""Smoke test of ``jaxkd bench``: two timed steps of a tiny model, the JSON's structure and sums."""
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

from jaxkd import bench, cli


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench") / "bench.json"
  status = cli.main(["bench", "--model", "mlp", "--batch-size", "8", "--methods", "ce,lsr,mrkd",
                     "--steps", "2", "--warmup", "1", "--num-examples", "64",
                     "--peak-tflops", "0.5", "--out", str(out)])
  assert status == 0
  with open(out) as f:
    return json.load(f)


@pytest.mark.slow
def test_json_structure(result):
  for key in ("command", "machine", "load_average", "ratio_to_ce", "methods", "mrkd_refresh",
              "transfer_guard", "device_to_host_bytes", "max_rss_bytes"):
    assert key in result, key
  assert result["command"].startswith("jaxkd bench --model mlp")
  assert set(result["machine"]["versions"]) >= {"jax", "jaxlib", "flax", "optax", "python"}
  assert len(result["load_average"]["before"]) == 3
  labels = ["ce", "ce@control", "lsr", "mrkd", "mrkd@refresh_every=2"]
  assert list(result["methods"]) == labels and list(result["ratio_to_ce"]) == labels
  assert result["transfer_guard"] == "passed" and result["device_to_host_bytes"] == 0
  for entry in result["methods"].values():
    assert entry["n"] == 2 and entry["host_ops_in_hlo"] == 0 and entry["compile_s"] > 0
    assert entry["p25_s"] <= entry["median_s"] <= entry["p75_s"]


@pytest.mark.slow
def test_ratios_are_ratios_of_the_reported_medians(result):
  methods = result["methods"]
  ce = methods["ce"]["median_s"]
  assert result["ratio_to_ce"]["ce"] == 1.0
  for label, ratio in result["ratio_to_ce"].items():
    assert ratio == pytest.approx(methods[label]["median_s"] / ce, rel=1e-12)
    assert methods[label]["median_s"] == pytest.approx(np.median(methods[label]["wall_s"]))
    assert methods[label]["images_per_s"] == pytest.approx(8 / methods[label]["median_s"])


def test_refresh_steps_are_told_apart(result):
  refresh = result["mrkd_refresh"]
  # Warm-up step 1 is untimed; timed steps 2 (a refresh) and 3 (a normal step).
  assert (refresh["n_refresh"], refresh["n_normal"]) == (1, 1)
  assert refresh["refresh_over_normal"] == pytest.approx(
      refresh["refresh_median_s"] / refresh["normal_median_s"])
  assert refresh["snapshot_taken_median_s"] > 0 and refresh["snapshot_skipped_median_s"] > 0


def test_mfu_is_three_forward_passes_of_model_flops_over_the_peak(result):
  # The MLP on 32x32x3 mock CIFAR: 3072 -> 128 -> 128 -> 100, two flops per multiply-add
  # (XLA also counts the bias adds and ReLUs, a fraction of a percent here).
  macs = 3072 * 128 + 128 * 128 + 128 * 100
  assert result["model_flops_per_image"] == pytest.approx(3 * 2 * macs, rel=2e-3)
  assert result["peak_flops"] == 0.5e12 and result["peak_source"] == "--peak-tflops"
  for entry in result["methods"].values():
    achieved = entry["images_per_s"] * result["model_flops_per_image"]
    assert entry["model_tflops_per_s"] == pytest.approx(achieved / 1e12)
    assert entry["mfu"] == pytest.approx(achieved / 0.5e12)


def test_datasheet_peaks_by_device_kind():
  class Device:
    device_kind = "NVIDIA H100 80GB HBM3"
  assert bench.peak_flops("bfloat16", Device())[0] == pytest.approx(989.4e12)
  Device.device_kind = "cpu"
  peak, why = bench.peak_flops("float32", Device())
  assert peak is None and "--peak-tflops" in why


def test_refresh_summary_splits_by_step_number():
  samples = [(1, 1.0, 0.5), (2, 4.0, 2.0), (3, 2.0, 1.0), (4, 6.0, 3.0), (5, 3.0, 1.5)]
  out = bench.refresh_summary(samples, 2)
  assert (out["n_refresh"], out["n_normal"]) == (2, 3)
  assert out["refresh_median_s"] == 5.0 and out["normal_median_s"] == 2.0
  assert out["refresh_over_normal"] == 2.5
  assert out["cpu_refresh_median_s"] == 2.5 and out["cpu_refresh_over_normal"] == 2.5


def test_summary_pairs_rounds():
  times = {"ce": [(1, 1.0, 1.0), (2, 2.0, 1.0), (3, 4.0, 1.0)],
           "x": [(1, 1.5, 3.0), (2, 2.0, 3.0), (3, 8.0, 3.0)]}
  cases = [bench.Case(label, label, None, None, None, 1.0, {}, 0, {}) for label in times]
  out = bench.summarize(cases, times, batch_size=4)
  assert out["x"]["ratio_to_ce"] == pytest.approx(2.0 / 2.0)
  assert out["x"]["cpu_ratio_to_ce"] == pytest.approx(3.0)
  assert out["x"]["paired_ratio_median"] == pytest.approx(np.median([1.5, 1.0, 2.0]))
  assert out["ce"]["images_per_s"] == pytest.approx(4 / 2.0)


def test_bad_method_is_rejected(capsys):
  assert cli.main(["bench", "--methods", "ce,nope"]) == 2
  err = capsys.readouterr().err
  assert "--methods='ce,nope'" in err and "nope" in err and "allowed" in err


def test_bad_peak_is_rejected(capsys):
  assert cli.main(["bench", "--peak-tflops", "-3"]) == 2
  assert "--peak-tflops=-3.0: must be > 0" in capsys.readouterr().err


# Earlier tests start JAX's threads; the forked workers only decode with Pillow, never JAX.
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_pipeline_bench_smoke(tmp_path):
  """``jaxkd bench-pipeline``: every case and worker kind runs; the JSON has rates and ratios."""
  out = tmp_path / "pipeline.json"
  status = cli.main(["bench-pipeline", "--images", "2", "--repeats", "1", "--workers", "1,2",
                     "--kinds", "thread,process", "--size", "64",
                     "--cases", "decode,decode_draft,train,train_before,eval", "--out", str(out)])
  assert status == 0
  with open(out) as f:
    result = json.load(f)
  assert result["command"].startswith("jaxkd bench-pipeline --images 2")
  assert set(result["cases"]) == {"decode", "decode_draft", "train", "train_before", "eval"}
  for by_config in result["cases"].values():
    assert set(by_config) == {"threadx1", "threadx2", "processx1", "processx2"}
    assert all(v["images_per_s"] > 0 and len(v["wall_s"]) == 1 for v in by_config.values())
  assert set(result["ratios"]["train/decode"]) == {"threadx1", "threadx2", "processx1",
                                                   "processx2"}
  assert result["machine"]["versions"]["pillow"]
  cores = result["host_cores_for_resnet50"]["8x A100 80GB (DGX A100)"]
  assert cores["cores"] == pytest.approx(16621 / cores["per_core_images_per_s"])
  assert cli.main(["bench-pipeline", "--kinds", "fibre"]) == 2
  assert cli.main(["bench-pipeline", "--cases", "nope", "--images", "1"]) == 2


def test_interleave_rotates_the_order_and_skips_warmup_rounds():
  calls = []
  samples = bench.interleave({name: (lambda r, name=name: calls.append((r, name)) or r)
                              for name in "abc"}, rounds=3, warmup=1)
  assert calls == [(0, "a"), (0, "b"), (0, "c"), (1, "b"), (1, "c"), (1, "a"),
                   (2, "c"), (2, "a"), (2, "b"), (3, "a"), (3, "b"), (3, "c")]
  assert [value for value, _, _ in samples["a"]] == [1, 2, 3]


def test_paired_ratios_by_hand():
  samples = {"slow": [(None, 4.0, 2.0), (None, 9.0, 3.0), (None, 6.0, 4.0)],
             "fast": [(None, 2.0, 1.0), (None, 3.0, 1.0), (None, 1.0, 2.0)]}
  got = bench.paired_ratios(samples, "slow", "fast")
  assert got["ratio"] == pytest.approx(6.0 / 2.0)  # medians 6 and 2
  assert got["paired"]["median"] == pytest.approx(3.0)  # per round: 2, 3, 6
  assert got["paired"]["p25"] == pytest.approx(2.5) and got["paired"]["p75"] == pytest.approx(4.5)
  assert got["cpu_ratio"] == pytest.approx(3.0 / 1.0)
  assert got["median_s"] == {"slow": 6.0, "fast": 2.0}
  assert got["cpu_median_s"] == {"slow": 3.0, "fast": 1.0}


# ------------------------------------------------- gpu.sh smoke run and its README table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(ROOT, "experiments", "bench")


def _render_module():
  spec = importlib.util.spec_from_file_location(
      "render_gpu_table", os.path.join(BENCH_DIR, "render_gpu_table.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


render_gpu_table = _render_module()


def _only(obj, paths):
  """``obj`` pruned to the dotted ``paths`` (``*``: every entry), nothing else kept."""
  if not paths or any(p == "" for p in paths):
    return obj
  if isinstance(obj, list):
    rest = [p.partition(".")[2] for p in paths if p.partition(".")[0] == "*"]
    return [_only(x, rest) for x in obj]
  out = {}
  for key, value in obj.items():
    rest = [p.partition(".")[2] for p in paths if p.partition(".")[0] in (key, "*")]
    if rest:
      out[key] = _only(value, rest)
  return out


# The smoke run of the GPU call, recorded: `bash experiments/bench/gpu.sh DIR smoke` (every
# stage at tiny sizes, on the CPU; 3.5 minutes beside two training runs, too long for the
# suite) wrote this directory. Re-record it after changing what a stage writes, and run the
# smoke before a device call (experiments/bench/README.md); the tests below check the record
# against the schema the table reads and the renderer against the record.
GPU_SMOKE = os.path.join(ROOT, "experiments", "results", "bench", "gpu_smoke_cpu")


@pytest.fixture(scope="module")
def gpu_smoke():
  return GPU_SMOKE


def test_gpu_smoke_every_stage_writes_the_fields_the_table_reads(gpu_smoke):
  assert render_gpu_table.check(gpu_smoke) == []
  with open(os.path.join(gpu_smoke, "gpu_log.txt")) as f:
    log = f.read()
  for stage in render_gpu_table.SCHEMA:
    assert f"== {stage}: exit 0 after" in log, stage


def test_gpu_smoke_numbers_add_up(gpu_smoke):
  load = lambda name: json.load(open(os.path.join(gpu_smoke, name)))
  epoch = load("epoch.json")
  for run in ("cold", "warm"):
    r, split = epoch[run], epoch[run]["time_split_s"]
    assert r["steps"] == 32 // 8 and all(v > 0 for v in split.values())
    # The loop's four parts happen one after another inside its wall time.
    assert sum(split.values()) <= r["wall_time_s"]
    assert r["other_s"] == pytest.approx(r["wall_time_s"] - sum(split.values()))
    assert r["train_images_per_s"] == pytest.approx(32 / (split["data_s"] + split["step_s"]))
  kd = load("kd_teacher.json")
  assert kd["frozen"]["ratio_to_ce"] == pytest.approx(kd["frozen"]["median_s"]
                                                      / kd["ce"]["median_s"])
  cached, second = kd["cached"], kd["cached"]["pass"]["methods"]
  assert cached["status"] == "timed"
  assert cached["ratio_to_frozen"] == pytest.approx(cached["median_s"]
                                                    / second["kd (frozen)"]["median_s"])
  # The teacher's forward pass is gone from the cached step: XLA counts ce's work.
  assert cached["xla_flops_ratio_to_ce"] == pytest.approx(1.0, abs=0.03)
  assert cached["frozen_xla_flops_ratio_to_ce"] > 1.1
  host = load("imagenet_host.json")
  # The tiny ImageNet: 2 images in each of the tests' 4 classes, every one read per epoch.
  assert host["tiny_imagenet"]["examples"]["train"] == 8
  assert {e["images"] for e in host["streamed"].values()} == {8}
  step = host["steps"]["mlp"]["images_per_s"]
  assert host["host_over_step"]["decode_all_cores"]["mlp"] == pytest.approx(
      host["decode"]["all_cores_images_per_s"] / step)
  for name in render_gpu_table.SCHEMA.values():
    assert load(name[0])["machine"]["versions"]["torch"]


def test_breaking_a_stage_json_fails_the_check(gpu_smoke, tmp_path):
  broken = tmp_path / "broken"
  shutil.copytree(gpu_smoke, broken)
  with open(broken / "epoch.json") as f:
    epoch = json.load(f)
  del epoch["warm"]["time_split_s"]["eval_s"]
  with open(broken / "epoch.json", "w") as f:
    json.dump(epoch, f)
  with open(broken / "bench_core.json") as f:
    core = json.load(f)
  del core["methods"]["lsr"]["mfu"]
  with open(broken / "bench_core.json", "w") as f:
    json.dump(core, f)
  os.remove(broken / "kd_teacher.json")
  assert sorted(render_gpu_table.check(str(broken))) == [
      "bench_core.json: no methods.lsr.mfu", "epoch.json: no warm.time_split_s.eval_s",
      "kd_teacher.json: absent"]
  assert render_gpu_table.main([str(broken), "--check"]) == 1
  assert render_gpu_table.main([gpu_smoke, "--check"]) == 0


def test_table_renders_from_the_schema_fields_alone(gpu_smoke, tmp_path):
  """A dry run renders the table; pruned to `SCHEMA`'s fields, every JSON renders the same
  table, so the schema the smoke run is checked against is all the table reads."""
  table = render_gpu_table.render(gpu_smoke)
  core = json.load(open(os.path.join(gpu_smoke, "bench_core.json")))
  ce = core["methods"]["ce"]
  assert f"| ce | {1e3 * ce['median_s']:,.2f} | {ce['images_per_s']:,.0f} | 1.000 |" in table
  assert "| cached | " in table and "skipped" not in table
  assert "Stages without JSON" not in table
  pruned = tmp_path / "pruned"
  pruned.mkdir()
  for name, fields in render_gpu_table.SCHEMA.values():
    with open(os.path.join(gpu_smoke, name)) as f:
      full = json.load(f)
    with open(pruned / name, "w") as f:
      json.dump(_only(full, fields), f)
  assert render_gpu_table.check(str(pruned)) == []
  away = str(tmp_path / "away")  # links relative to a folder beside both: plain file names
  assert render_gpu_table.render(str(pruned), away) == render_gpu_table.render(
      gpu_smoke, away).replace(gpu_smoke, str(pruned))
  # Into a README between the markers, twice: the second run replaces the first.
  readme = tmp_path / "README.md"
  readme.write_text(f"# x\nbefore\n{render_gpu_table.BEGIN}\nTHE LAST TABLE\n"
                    f"{render_gpu_table.END}\nafter\n")
  for _ in range(2):
    assert render_gpu_table.main([gpu_smoke, "--readme", str(readme)]) == 0
  assert readme.read_text() == (
      f"# x\nbefore\n{render_gpu_table.BEGIN}\n{render_gpu_table.render(gpu_smoke, str(tmp_path))}"
      f"\n{render_gpu_table.END}\nafter\n")


def test_schema_paths_and_markers():
  missing = render_gpu_table.missing
  obj = {"a": {"x": {"m": 1}, "y": {"m": 2, "n": 3}}, "l": [{"k": 1}, {}], "e": {}}
  assert missing(obj, "a.*.m") == [] and missing(obj, "a.*.n") == ["a.x.n"]
  assert missing(obj, "l.*.k") == ["l.1.k"] and missing(obj, "e.*.k") == ["e.*.k (no entries)"]
  assert missing(obj, "b") == ["b"] and missing(obj, "a.x.m.z") == ["a.x.m.z"]
  # The README holds one pair of markers, so --readme README.md lands the table there.
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  assert text.count(render_gpu_table.BEGIN) == 1 and text.count(render_gpu_table.END) == 1
  with pytest.raises(ValueError, match="gpu-table:begin"):
    render_gpu_table.replace_between_markers("no markers", "table")

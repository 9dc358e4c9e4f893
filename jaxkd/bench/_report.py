"""The benchmark's statistics, machine facts and printed table."""
from __future__ import annotations

import importlib.metadata
import os
import platform

import jax
import numpy as np

__all__ = ["device_peak_bytes", "format_table", "machine", "refresh_summary", "rss_bytes",
           "summarize"]


def _summary(samples: list[tuple[int, float, float]], batch_size: int) -> dict:
  wall = np.asarray([w for _, w, _ in samples])
  median = float(np.median(wall))
  return {"median_s": median, "p25_s": float(np.percentile(wall, 25)),
          "p75_s": float(np.percentile(wall, 75)), "n": int(wall.size),
          "images_per_s": batch_size / median,
          "min_s": float(wall.min()),
          "cpu_median_s": float(np.median([c for _, _, c in samples])),
          "wall_s": wall.tolist()}


def refresh_summary(samples: list[tuple[int, float, float]], refresh_every: int) -> dict:
  """Refresh steps (step number a multiple of ``refresh_every``) against the others."""
  out = {"refresh_every": refresh_every}
  for clock, column in (("", 1), ("cpu_", 2)):
    refresh = [x[column] for x in samples if x[0] % refresh_every == 0]
    normal = [x[column] for x in samples if x[0] % refresh_every != 0]
    out.update(n_refresh=len(refresh), n_normal=len(normal))
    if refresh and normal:
      out[f"{clock}refresh_median_s"] = float(np.median(refresh))
      out[f"{clock}normal_median_s"] = float(np.median(normal))
      out[f"{clock}refresh_over_normal"] = (out[f"{clock}refresh_median_s"]
                                            / out[f"{clock}normal_median_s"])
  return out


def summarize(cases: list, times: dict, batch_size: int) -> dict:
  """Per-case statistics against ``ce``.

  ``ratio_to_ce`` is median wall time over ce's; ``cpu_ratio_to_ce`` the same for CPU time,
  which machine load disturbs far less than wall time (a step waiting for a core uses none);
  ``min_ratio_to_ce`` compares the fastest steps, the ones load disturbed least;
  ``paired_ratio_median`` pairs the steps of one round, which cancels slow load drift;
  ``xla_cost_ratio_to_ce`` is XLA's static count of flops and bytes accessed.
  """
  methods = {}
  for case in cases:
    methods[case.label] = {
        **_summary(times[case.label], batch_size), "method": case.method,
        "compile_s": case.compile_s, "xla_memory_bytes": case.memory,
        "rss_delta_bytes": case.rss_delta, "host_ops_in_hlo": case.host_ops,
        "xla_cost": case.cost, "hparams": case.hparams}
  ce = methods["ce"]
  ce_wall = [w for _, w, _ in times["ce"]]
  for label, entry in methods.items():
    entry["ratio_to_ce"] = entry["median_s"] / ce["median_s"]
    entry["cpu_ratio_to_ce"] = entry["cpu_median_s"] / ce["cpu_median_s"]
    entry["min_ratio_to_ce"] = entry["min_s"] / ce["min_s"]
    entry["xla_cost_ratio_to_ce"] = {k: v / ce["xla_cost"][k] for k, v in entry["xla_cost"].items()
                                     if ce["xla_cost"].get(k)}
    entry["paired_ratio_median"] = float(np.median(
        [w / c for (_, w, _), c in zip(times[label], ce_wall)]))
  return methods


def rss_bytes() -> int:
  """The resident memory of this process now."""
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def machine() -> dict:
  """CPU, device, XLA_FLAGS and library versions of this process (PyTorch's where installed)."""
  import flax
  import jaxlib
  import optax
  cpu = platform.processor()
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                 cpu)
  device = jax.devices()[0]
  # PyTorch's version without importing it (slow), where it is installed.
  try:
    torch = {"torch": importlib.metadata.version("torch")}
  except importlib.metadata.PackageNotFoundError:
    torch = {}
  return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
          "device": f"{device.platform}: {device.device_kind}", "num_devices": jax.device_count(),
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "versions": {"python": platform.python_version(), "jax": jax.__version__,
                       "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                       "optax": optax.__version__, "numpy": np.__version__, **torch}}


def device_peak_bytes() -> int | None:
  """The device allocator's peak (GPU/TPU); None where the backend keeps no statistics."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def format_table(result: dict) -> str:
  """A plain-text table of the result (one row per method)."""
  head = (f"{'method':<22}{'median ms':>11}{'ratio':>8}{'cpu':>8}{'min':>8}{'flops':>8}"
          f"{'bytes':>8}{'compile s':>11}{'XLA temp MiB':>14}{'images/s':>10}{'MFU %':>7}")
  rows = [f"{result['model']}, batch {result['batch_size']}, {result['dtype']}, augment "
          f"{result['augment']}, {result['machine']['device']}, "
          f"{result['steps']} timed steps each; to ce: ratio of median wall times, cpu: of "
          "median CPU times, min: of fastest steps, flops/bytes: of XLA's cost analysis; "
          f"MFU: 3x forward FLOPs per image over {result.get('peak_source', 'no peak')}", head]
  for label, m in result["methods"].items():
    temp = m["xla_memory_bytes"].get("temp_size_in_bytes")
    mfu = m.get("mfu")
    cost = m["xla_cost_ratio_to_ce"]
    rows.append(f"{label:<22}{1e3 * m['median_s']:>11.1f}{m['ratio_to_ce']:>8.3f}"
                f"{m['cpu_ratio_to_ce']:>8.3f}{m['min_ratio_to_ce']:>8.3f}"
                f"{cost.get('flops', float('nan')):>8.3f}"
                f"{cost.get('bytes accessed', float('nan')):>8.3f}{m['compile_s']:>11.1f}"
                f"{'-' if temp is None else f'{temp / 2**20:.1f}':>14}"
                f"{m['images_per_s']:>10.1f}{'-' if mfu is None else f'{100 * mfu:.1f}':>7}")
  refresh = result.get("mrkd_refresh")
  if refresh and "refresh_over_normal" in refresh:
    rows.append(f"mrkd refresh step / normal step (refresh_every=2): wall "
                f"{refresh['refresh_over_normal']:.3f} ({1e3 * refresh['refresh_median_s']:.1f} "
                f"vs {1e3 * refresh['normal_median_s']:.1f} ms), cpu "
                f"{refresh.get('cpu_refresh_over_normal', float('nan')):.3f}; the snapshot "
                f"alone {1e3 * refresh['snapshot_taken_median_s']:.2f} ms "
                f"({100 * refresh['snapshot_over_step']:.2f}% of a step)")
  rows.append(f"transfer guard: {result['transfer_guard']}, device-to-host bytes "
              f"{result['device_to_host_bytes']}, host ops in the HLO "
              f"{sum(m['host_ops_in_hlo'] for m in result['methods'].values())}")
  return "\n".join(rows)

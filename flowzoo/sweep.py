"""Sweep runner: one config, a list of override points, several seeds -> one table and one plot.

Used for MixFlow's comparisons and ablations (MixFlow §5.3 Table 4: MixFlow
vs CFM on held-out conditions; §6 Fig. 3a: number of modes I; Fig. 3b: PCA
dimension). Each point is a named dict of dotted config overrides (the same
keys as `--config.a.b=v`); every (point, seed) is one `train_and_evaluate`
run in `workdir/<point>/seed<k>`, so finished runs are reused (a run whose
`eval.json` exists and whose `config.json` matches is not retrained) and
interrupted ones resume from their checkpoints. A point that differs from an
earlier one of the same seed only in evaluation settings (`eval.*`, or a
dataset's evaluation-only field such as letters' `val_letter`) is not trained
again: the earlier run's checkpoints are copied into its directory and only
evaluated. The runner then writes

    workdir/sweep.md    markdown table: metric mean ± std over seeds per point
    workdir/sweep.json  the same numbers plus per-seed values
    workdir/sweep.csv   one row per (point, metric)
    workdir/sweep.png   one panel per metric (error bars = std over seeds)

Overrides follow the CLI rules: a key must exist in the config (configs are
locked), except inside a section whose `name` the same point changes: then
keys the new component accepts may be added, and the new component's
defaults are filled in (`build.fill_defaults`), as if the config file had
named it.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from flowzoo import build as build_lib
from flowzoo.checkpoint import as_stored, config_diff

DEFAULT_METRICS = ("mmd", "w1", "w2", "energy")


@dataclasses.dataclass(frozen=True)
class Point:
  """One sweep point: a directory-safe name and dotted config overrides."""

  name: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not self.name or any(ch in self.name for ch in "/\\ ") or self.name.startswith("."):
      raise ValueError(f"sweep point name {self.name!r} must be a non-empty file name "
                       "without '/', '\\' or spaces.")


def as_points(grid: Sequence) -> list[Point]:
  """`[Point | (name, overrides) | overrides]` -> `[Point]` (unnamed: `p0`, `p1`, ...)."""
  points = []
  for i, p in enumerate(grid):
    if isinstance(p, Point):
      points.append(p)
    elif isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str):
      points.append(Point(p[0], dict(p[1])))
    elif isinstance(p, Mapping):
      points.append(Point(f"p{i}", dict(p)))
    else:
      raise TypeError(f"sweep point {i}: expected Point, (name, overrides) or a dict, got {p!r}.")
  names = [p.name for p in points]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise ValueError(f"sweep point names must be unique; repeated: {dup}.")
  if not points:
    raise ValueError("sweep grid is empty.")
  return points


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted `overrides` applied (see the module docstring).

  Raises:
    KeyError: naming the key, if it does not exist and its section's
      component is not swapped to one that accepts it.
  """
  c = copy.deepcopy(config)
  swapped = {k.split(".")[0]: v for k, v in overrides.items()
             if k.count(".") == 1 and k.endswith(".name") and k.split(".")[0] in build_lib.SECTIONS}
  with c.unlocked():
    for key, value in overrides.items():
      *path, last = key.split(".")
      node = c
      for p in path:
        if p not in node:
          raise KeyError(f"sweep override {key!r}: config has no field {p!r}.")
        node = node[p]
      if last not in node:
        section = path[0] if len(path) == 1 else None
        accepted = (build_lib.SECTIONS[section].accepted(swapped[section])
                    if section in swapped else None)
        if accepted is None or last not in accepted:
          raise KeyError(f"sweep override {key!r}: config has no field {last!r}"
                         + (f" and {section} {swapped[section]!r} does not take it."
                            if section in swapped else "."))
      if isinstance(value, list):
        value = tuple(value)
      node[last] = value
  # Defaults filled in for every component, also one swapped on the command
  # line: the same config its run stores in config.json.
  return build_lib.resolved(c)


def run_dir(workdir: str | Path, point: Point, seed: int) -> Path:
  return Path(workdir) / point.name / f"seed{seed}"


def _finished(config, rdir: Path) -> bool:
  """True when `rdir` holds the evaluation of a finished run of `config`."""
  cfg, ev = rdir / "config.json", rdir / "eval.json"
  if not (cfg.exists() and ev.exists()):
    return False
  old, new = json.loads(cfg.read_text()), as_stored(config.to_dict())
  return not config_diff(old, new) and new.get("eval") == old.get("eval")


# What a run's directory holds of its training (not of its evaluation).
_TRAINING_FILES = ("checkpoints", "config.json", "train_metrics.jsonl")


def _trained_twin(config, rdir: Path, earlier: Sequence[tuple[Point, Any, Path]]) -> Point | None:
  """An earlier point whose finished training `config` would repeat, if any.

  Two configs train the same model when they differ only in evaluation
  settings: `eval.*` and the dataset's evaluation-only fields (e.g. letters'
  `val_letter`, `build.evaluation_only_keys`). Only a run without checkpoints
  of its own is given a twin's.
  """
  if (rdir / "checkpoints").is_dir() and any((rdir / "checkpoints").iterdir()):
    return None
  # Not RESUME_SAFE: a different checkpoint schedule would change what
  # checkpoint selection can choose from.
  safe = ("eval",) + build_lib.evaluation_only_keys(config)
  new = as_stored(config.to_dict())
  for point, other, odir in earlier:
    if (odir / "eval.json").is_file() and (odir / "checkpoints").is_dir() \
        and not config_diff(as_stored(other.to_dict()), new, safe):
      return point
  return None


def _copy_training(src: Path, dst: Path) -> None:
  """Copies a finished run's checkpoints, config and training log into `dst`."""
  dst.mkdir(parents=True, exist_ok=True)
  for name in _TRAINING_FILES:
    if (src / name).is_dir():
      shutil.copytree(src / name, dst / name, dirs_exist_ok=True)
    elif (src / name).is_file():
      shutil.copy2(src / name, dst / name)


def run_sweep(config: ml_collections.ConfigDict, grid: Sequence, workdir: str | Path, *,
              seeds: Sequence[int] = (0,), split: str = "heldout",
              metrics: Sequence[str] | None = None, overwrite: bool = False,
              reference: str | None = None, run_fn: Callable | None = None,
              title: str = "") -> dict:
  """Runs every point of `grid` for every seed, then writes table, JSON, CSV and plot.

  Args:
    config: the base (finalized, locked) config.
    grid: points: `Point`s, `(name, overrides)` pairs or override dicts.
    workdir: root; run (point, seed) goes to `workdir/<point>/seed<seed>`.
    seeds: values of `config.seed` to run.
    split: the evaluation split tabulated (e.g. "heldout").
    metrics: metrics to tabulate (default: those of `config.eval.metrics`).
    overwrite: passed to `train_and_evaluate` (discard mismatching checkpoints).
    reference: point that the table's relative change column compares to
      (e.g. "cfm"); None: no relative column.
    run_fn: `(config, workdir, overwrite=) -> results` (default
      `flowzoo.experiment.train_and_evaluate`).
  Returns:
    the summary written to `sweep.json` (see `summarize`).
  """
  if run_fn is None:
    # Imported on use: the table/plot helpers need no JAX.
    from flowzoo.experiment import train_and_evaluate as run_fn
  points = as_points(grid)
  seeds = [int(s) for s in seeds]
  if not seeds:
    raise ValueError("run_sweep needs at least one seed.")
  if reference is not None and reference not in [p.name for p in points]:
    raise ValueError(f"reference point {reference!r} is not in the grid "
                     f"{[p.name for p in points]}.")
  # Build and check every point's config first: a bad override or value fails
  # before any training, not after the points before it have run.
  from flowzoo.experiment import check_config  # pylint: disable=import-outside-toplevel
  configs = {}
  for p in points:
    for s in seeds:
      configs[p.name, s] = apply_overrides(config, dict(p.overrides, seed=s))
      try:
        check_config(configs[p.name, s])
        if split not in configs[p.name, s].eval.splits:  # its table column would be nan
          raise ValueError(f"the tabulated split {split!r} is not evaluated (eval.splits = "
                           f"{tuple(configs[p.name, s].eval.splits)}); pass --split=... or "
                           f"add it to eval.splits.")
      except ValueError as e:
        raise ValueError(f"sweep point {p.name!r} (seed {s}): {e}") from e
  metrics = tuple(metrics or config.eval.metrics)
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  results = {}
  for i, p in enumerate(points):
    for s in seeds:
      rdir = run_dir(workdir, p, s)
      cfg = configs[p.name, s]
      if _finished(cfg, rdir):
        print(f"[sweep] {p.name} seed {s}: finished run found in {rdir}, reusing it.")
        results[p.name, s] = json.loads((rdir / "eval.json").read_text())
        continue
      print(f"[sweep] {p.name} seed {s}: overrides {dict(p.overrides)} -> {rdir}")
      twin = _trained_twin(cfg, rdir, [(q, configs[q.name, s], run_dir(workdir, q, s))
                                       for q in points[:i]])
      if twin is not None:
        print(f"[sweep] {p.name} seed {s}: trains exactly as {twin.name} (they differ only in "
              f"evaluation settings); evaluating {twin.name}'s checkpoints instead of retraining.")
        _copy_training(run_dir(workdir, twin, s), rdir)
      results[p.name, s] = run_fn(cfg, rdir, overwrite=overwrite)
  summary = summarize(points, seeds, results, split=split, metrics=metrics)
  summary.update(title=title, reference=reference)
  write_outputs(summary, workdir)
  return summary


def summarize(points: Sequence[Point], seeds: Sequence[int], results: Mapping, *,
              split: str, metrics: Sequence[str]) -> dict:
  """Mean ± std over seeds of each point's split mean, per metric.

  Args:
    results: `(point name, seed) -> eval results` (eval.json contents).
  Returns:
    {"split", "metrics", "seeds", "points": [{"name", "overrides",
    "metrics": {m: {"mean", "std", "values"}}}]}. std is the population std
    (0 for one seed); a metric or split a run lacks is reported as NaN.
  """
  rows = []
  for p in points:
    row = {"name": p.name, "overrides": {k: _jsonable(v) for k, v in p.overrides.items()},
           "metrics": {}}
    for m in metrics:
      vals = [float(results[p.name, s].get(m, {}).get(split, {}).get("mean", np.nan))
              for s in seeds]
      row["metrics"][m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)),
                           "values": vals}
    rows.append(row)
  return {"split": split, "metrics": list(metrics), "seeds": list(seeds), "points": rows}


def _jsonable(v):
  return list(v) if isinstance(v, tuple) else v


def format_table(summary: dict) -> str:
  """Markdown table: one row per point, `mean ± std` per metric (+ change vs reference)."""
  ms, ref = summary["metrics"], summary.get("reference")
  ref_row = next((r for r in summary["points"] if r["name"] == ref), None)
  n = len(summary["seeds"])
  head = ["point"] + [f"{m} ({summary['split']})" for m in ms]
  if ref_row is not None:
    head.append(f"change vs {ref} ({'/'.join(ms)})")
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in summary["points"]:
    cells = [r["name"]]
    for m in ms:
      v = r["metrics"][m]
      cells.append(f"{v['mean']:.4g} ± {v['std']:.2g}" if n > 1 else f"{v['mean']:.4g}")
    if ref_row is not None:
      cells.append(" / ".join(_pct(r["metrics"][m]["mean"], ref_row["metrics"][m]["mean"])
                              for m in ms))
    lines.append("| " + " | ".join(cells) + " |")
  foot = f"\n{n} seed(s): {summary['seeds']}" + (" (mean ± std over seeds)" if n > 1 else "")
  title = f"{summary['title']}\n\n" if summary.get("title") else ""
  return title + "\n".join(lines) + foot


def _pct(x: float, ref: float) -> str:
  if not np.isfinite(x) or not np.isfinite(ref) or ref == 0:
    return "n/a"
  return f"{100.0 * (x - ref) / abs(ref):+.0f}%"


def write_outputs(summary: dict, workdir: str | Path) -> None:
  """sweep.md, sweep.json, sweep.csv and sweep.png in `workdir`."""
  workdir = Path(workdir)
  (workdir / "sweep.md").write_text(format_table(summary) + "\n")
  (workdir / "sweep.json").write_text(json.dumps(summary, indent=2))
  with open(workdir / "sweep.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["point", "metric", "split", "mean", "std", "num_seeds", "values"])
    for r in summary["points"]:
      for m in summary["metrics"]:
        v = r["metrics"][m]
        w.writerow([r["name"], m, summary["split"], v["mean"], v["std"], len(v["values"]),
                    " ".join(f"{x:.6g}" for x in v["values"])])
  plot(summary, workdir / "sweep.png")


def plot(summary: dict, path: str | Path) -> None:
  """One bar panel per metric: point means with std-over-seeds error bars."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")  # headless: files only
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  ms, rows = summary["metrics"], summary["points"]
  names = [r["name"] for r in rows]
  fig, axes = plt.subplots(1, len(ms), figsize=(max(3.0, 0.6 * len(rows) + 1.5) * len(ms), 3.2),
                           squeeze=False)
  for ax, m in zip(axes[0], ms):
    means = [r["metrics"][m]["mean"] for r in rows]
    stds = [r["metrics"][m]["std"] for r in rows]
    ax.bar(range(len(rows)), means, yerr=stds, capsize=3, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(rows)), names, rotation=45 if len(rows) > 3 else 0, ha="right"
                  if len(rows) > 3 else "center", fontsize=8)
    ax.set_title(f"{m} ({summary['split']})", fontsize=9)
  fig.suptitle(summary.get("title") or "sweep", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def sweeps_from_file(config_path: str | Path) -> dict:
  """The named grids of a config file: its module's `sweeps()` (name -> grid)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  path = Path(str(config_path).partition(":")[0])
  spec = importlib.util.spec_from_file_location(f"_sweep_config_{path.stem}", path)
  if spec is None or spec.loader is None:
    raise FileNotFoundError(f"cannot load config module {path}.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "sweeps"):
    raise KeyError(f"{path} defines no sweeps() (named grids of config overrides).")
  return module.sweeps()


def run_named(config: ml_collections.ConfigDict, config_path: str | Path, name: str,
              workdir: str | Path, *, seeds: Sequence[int] | None = None,
              split: str | None = None, overwrite: bool = False) -> dict:
  """Runs sweep `name` of the config file's `sweeps()` and prints its table.

  `seeds`, `split` default to `config.compare.seeds` / `.split` when the
  config has a `compare` section (else (0,) and "heldout"); the point named
  `config.compare.reference` (if any) is the table's reference. Every
  point's config gets `compare.sweep = ''` so it is one plain run.
  """
  grids = sweeps_from_file(config_path)
  if name not in grids:
    raise KeyError(f"unknown sweep {name!r}; {config_path} defines {sorted(grids)}.")
  cmp = config.get("compare") or {}
  seeds = tuple(seeds if seeds is not None else cmp.get("seeds", (0,)))
  split = split or cmp.get("split", "heldout")
  reference = cmp.get("reference") or None
  points = as_points(grids[name])
  if reference not in [p.name for p in points]:
    reference = None
  base = config
  if "compare" in config:
    base = apply_overrides(config, {"compare.sweep": ""})
  title = f"{Path(str(config_path)).name} sweep {name!r}: {split} conditions"
  summary = run_sweep(base, points, workdir, seeds=seeds, split=split, overwrite=overwrite,
                      reference=reference, title=title)
  print("\n" + format_table(summary))
  print(f"\n(table: {Path(workdir) / 'sweep.md'}; also sweep.json, sweep.csv, sweep.png)")
  if cmp.get("note"):
    print("\n" + cmp["note"])
  return summary

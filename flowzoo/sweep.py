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
defaults are filled in (`flowzoo.config.apply_overrides`), as if the config
file had named it. Tables, CSV, plots and `results/` pages come from the report
writer, `flowzoo.report`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import ml_collections

from flowzoo import domain_eval
from flowzoo import config as config_lib
from flowzoo import report
from flowzoo.config import apply_overrides, as_stored, config_diff
from flowzoo.progress import Console

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


def _brief(overrides: Mapping[str, Any]) -> dict:
  """Overrides for a progress line: a whole replaced section shows as "<section name>"."""
  return {k: f"<{v.get('name', k)} section>" if isinstance(v, Mapping) else v
          for k, v in overrides.items()}


def run_dir(workdir: str | Path, point: Point, seed: int) -> Path:
  return Path(workdir) / point.name / f"seed{seed}"


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
  safe = ("eval",) + config_lib.evaluation_only_keys(config)
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
              title: str = "", config_grid: bool = False) -> dict:
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
    run_fn: `(config, workdir, overwrite=, console=) -> results` (default
      `flowzoo.experiment.train_and_evaluate`).
    config_grid: the grid is the config module's own `sweeps()` entry: as for
      a baseline arm, the settings of a component that a point swaps out
      (the CFM twin's `base.*`) are expected and not warned about.
  Returns:
    the summary written to `sweep.json` (see `summarize`).
  """
  arm = {}
  if run_fn is None:
    # Imported on use: the table/plot helpers need no JAX.
    from flowzoo.experiment import train_and_evaluate as run_fn
    arm = {"arm": True} if config_grid else {}
  points = as_points(grid)
  seeds = [int(s) for s in seeds]
  if not seeds:
    raise ValueError("run_sweep needs at least one seed.")
  if reference is not None and reference not in [p.name for p in points]:
    raise ValueError(f"reference point {reference!r} is not in the grid "
                     f"{[p.name for p in points]}.")
  # Build and check every point's config first: a bad override or value fails
  # before any training, not after the points before it have run.
  configs = {}
  for p in points:
    for s in seeds:
      configs[p.name, s] = apply_overrides(config, dict(p.overrides, seed=s))
      try:
        config_lib.validate(configs[p.name, s])
        if split not in configs[p.name, s].eval.splits:  # its table column would be nan
          raise ValueError(f"the tabulated split {split!r} is not evaluated (eval.splits = "
                           f"{tuple(configs[p.name, s].eval.splits)}); pass --split=... or "
                           f"add it to eval.splits.")
      except ValueError as e:
        raise ValueError(f"sweep point {p.name!r} (seed {s}): {e}") from e
  metrics_arg, metrics = metrics, tuple(metrics or config.eval.metrics)
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  results = {}
  total = len(points) * len(seeds)
  for i, p in enumerate(points):
    for j, s in enumerate(seeds):
      rdir = run_dir(workdir, p, s)
      cfg = configs[p.name, s]
      console = Console(f"[run {i * len(seeds) + j + 1}/{total} ({p.name} seed {s})]")
      if config_lib.finished_run(cfg, rdir):
        console.say(f"finished run found in {rdir}, reusing it.")
        results[p.name, s] = json.loads((rdir / "eval.json").read_text())
        continue
      console.say(f"overrides {_brief(p.overrides)} -> {rdir}")
      twin = _trained_twin(cfg, rdir, [(q, configs[q.name, s], run_dir(workdir, q, s))
                                       for q in points[:i]])
      if twin is not None:
        console.say(f"trains exactly as {twin.name} (they differ only in evaluation settings); "
                    f"evaluating {twin.name}'s checkpoints instead of retraining.")
        _copy_training(run_dir(workdir, twin, s), rdir)
      results[p.name, s] = run_fn(cfg, rdir, overwrite=overwrite, console=console,
                                  **(arm if p.overrides else {}))
  extras, notes = dict(metrics=metrics), []
  domain = domain_eval.for_config(config)
  more = {}
  if domain and all(domain.applies(c) for c in configs.values()):
    more = _baselines(domain, configs, split, results, seeds)
    points = list(points) + [Point(n) for n in more["names"]]
    extras = dict(metrics=tuple(metrics_arg) if metrics_arg else more["metrics"],
                  higher=more["higher"], baselines=more["names"])
    notes = more["notes"]
  summary = report.summarize(points, seeds, results, split=split, **extras)
  summary.update(title=title, reference=reference, notes=notes)
  if more.get("compare_to"):
    summary["compare_to"] = more["compare_to"]
  report.write_outputs(summary, workdir)
  return summary


def _baselines(domain, configs: Mapping[tuple[str, int], Any], split: str,
               results: dict, seeds: Sequence[int]) -> dict:
  """The domain's trivial baselines as extra rows of a sweep's table (`add_baselines`).

  Points scored on different data (the letters sweep's S and H points) get one
  set of baseline rows per dataset, named by the dataset fields that differ
  ("pooled_letter[val_letter=H]"; point names hold no spaces), and
  `compare_to` (point -> its dataset's baseline rows) for the verdicts.
  """
  groups = []  # one representative config per distinct dataset
  for c in configs.values():
    if not any(domain.comparable(g, c) for g in groups):
      groups.append(c)
  if len(groups) == 1:
    return domain.add_baselines(groups[0], split, results, seeds)
  out = {"names": [], "metrics": [], "higher": [], "descriptions": {}, "notes": [],
         "compare_to": {}}
  first = groups[0]["dataset"].to_dict()
  for g in groups:
    data = g["dataset"].to_dict()
    keys = config_diff(first, data, safe=()) or config_diff(groups[1]["dataset"].to_dict(),
                                                            data, safe=())
    label = re.sub(r"[\s/\\]+", "_", ",".join(f"{k}={data.get(k)}" for k in keys))
    scored: dict = {}
    more = domain.add_baselines(g, split, scored, seeds)
    rows = [f"{name}[{label}]" for name in more["names"]]
    for (point, _), c in configs.items():
      if domain.comparable(g, c):
        out["compare_to"][point] = rows
    for name, row in zip(more["names"], rows):
      out["names"].append(row)
      out["descriptions"][row] = more["descriptions"].get(name, "")
      for s in seeds:
        results[row, s] = scored[name, s]
    out["metrics"] = out["metrics"] or more["metrics"]
    out["higher"] = out["higher"] or more["higher"]
    out["notes"] += [n for n in more["notes"] if n not in out["notes"]]
  return out


def sweeps_from_file(config_path: str | Path) -> dict:
  """The named grids of a config file: its module's `sweeps()` (name -> grid).

  A `sweeps(arg)` that takes an argument gets the config's variant (the text
  after ":"), so its points can be whole configs of the same variant.
  """
  import importlib.util  # pylint: disable=import-outside-toplevel
  import inspect  # pylint: disable=import-outside-toplevel
  file, _, variant = str(config_path).partition(":")
  path = Path(file)
  spec = importlib.util.spec_from_file_location(f"_sweep_config_{path.stem}", path)
  if spec is None or spec.loader is None:
    raise FileNotFoundError(f"cannot load config module {path}.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "sweeps"):
    raise KeyError(f"{path} defines no sweeps() (named grids of config overrides).")
  takes_variant = bool(inspect.signature(module.sweeps).parameters)
  return module.sweeps(variant or None) if takes_variant else module.sweeps()


def run_named(config: ml_collections.ConfigDict, config_path: str | Path, name: str,
              workdir: str | Path, *, seeds: Sequence[int] = (0,), split: str = "heldout",
              reference: str | None = None, overwrite: bool = False,
              results: str | Path | None = None, command: str = "") -> dict:
  """Runs sweep `name` of the config file's `sweeps()` and prints its table.

  Args:
    reference: point the relative-change column compares to (None: none).
    results: a `results/<config>.md` page to write the table into (section
      "<file> <sweep>"), with `command`.
  """
  grids = sweeps_from_file(config_path)
  if name not in grids:
    raise KeyError(f"unknown sweep {name!r}; {config_path} defines {sorted(grids)}.")
  points = as_points(grids[name])
  if reference is not None and reference not in [p.name for p in points]:
    raise ValueError(f"--reference={reference!r} is not a point of sweep {name!r}: "
                     f"{[p.name for p in points]}.")
  label = Path(str(config_path)).name
  title = f"{label} sweep {name!r}: {split} conditions"
  summary = run_sweep(config, points, workdir, seeds=seeds, split=split, overwrite=overwrite,
                      reference=reference, title=title, config_grid=True)
  print("\n" + report.format_table(summary))
  print(f"\n(table: {Path(workdir) / 'sweep.md'}; also sweep.json, sweep.csv, sweep.png)")
  if results:
    page = report.results_page(summary, results, section=f"{label} sweep {name}",
                               command=command)
    print(f"(results page: {page})")
  return summary

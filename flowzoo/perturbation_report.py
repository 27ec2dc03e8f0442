"""Scores trained runs' generated cells and the baselines with PerturBench's metrics: one table.

For one evaluation split (default "heldout") of an `anndata_perturbations`
dataset, every run (its `samples.npz`, decoded to gene space) and every
baseline defined for all of the split's conditions (`flowzoo.baselines`) is
scored with `flowzoo.metrics_perturbation` against the real cells; the table
shows each metric's mean over the conditions (ranks within covariate
contexts). All rows share the real cells, the control cells and the 30-PC
projection fitted on the real cells, so they are comparable. Runs must share
the dataset and split (a PCA-space run may differ in `pca_components` only).

    python -m experiments.perturbench_eval --workdir=RUN [--workdir=RUN2 ...]

or `report(workdirs)`. A run can do it itself right after evaluation with one
line in `flowzoo.experiment._evaluate_and_write` (after samples.npz):

    if (table := perturbation_report.after_evaluation(workdir, exp.config, samples)): print(table)

which writes generated.h5ad and perturbench.{txt,json} and returns the table
(None for datasets other than `anndata_perturbations`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from flowzoo import baselines as baselines_lib
from flowzoo import generated_cells
from flowzoo import metrics_perturbation as mp
from flowzoo.data import anndata_perturbations as ap
from flowzoo.generated_cells import dataset_kwargs

# Columns: metric (mean over conditions) and its rank; "^" higher is better.
SHORT = {"mmd_gex": "MMD gex", "mmd_pca": "MMD pca", "deg_recall": "DEG rec^",
         "cosine_logfc": "cos lfc^", "rmse_mean": "RMSE"}


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
  return x if len(x) <= n else x[np.sort(rng.choice(len(x), n, replace=False))]


def load_run(workdir: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
  """(config dict, samples) of a finished run directory."""
  workdir = Path(workdir)
  for f in ("config.json", "samples.npz"):
    if not (workdir / f).is_file():
      raise FileNotFoundError(f"{workdir / f} is missing: is {workdir} a finished run?")
  config = json.loads((workdir / "config.json").read_text())
  with np.load(workdir / "samples.npz") as z:
    samples = {k: z[k] for k in z.files}
  return config, samples


def run_label(config: Mapping, fallback: str = "run") -> str:
  """"<method>/<base>/<model>[ pca<k>] cfg<g>" of a run's config.

  MixFlow with the fixed base N(0, I) is vanilla CFM (MixFlow §3; cfm_perturbench.py)
  and is labelled so.
  """
  ds = config["dataset"]
  pca = f" pca{ds['pca_components']}" if ds.get("pca_components") else ""
  try:
    method, base = config["method"]["name"], config["base"]["name"]
    if method == "mixflow" and base == "gaussian":
      method = "cfm"
    return f"{method}/{base}/{config['model']['name']}{pca} cfg{config['eval']['guidance']:g}"
  except KeyError:
    return fallback


def predictions(data: ap.PerturbationData, samples: Mapping[str, np.ndarray], split: str
                ) -> dict[str, np.ndarray]:
  """Condition -> generated cells in gene space for `split`."""
  out = {}
  for key, x in samples.items():
    s, _, name = key.partition("/")
    if s == split:
      out[name] = data.to_genes(x)
  return out


def score(data: ap.PerturbationData, methods: Mapping[str, Mapping[str, np.ndarray]], *,
          split: str = "heldout", baselines: bool = True, max_cells: int = 1000,
          n_degs: int = mp.N_DEGS, seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
  """row label -> metric -> {condition: value}, for the runs' and baselines' cells.

  Args:
    data: the dataset (real cells, controls, splits).
    methods: label -> (condition -> gene-space cells) predictions.
    split: the evaluated split; every one of its conditions must be predicted.
    baselines: add every baseline defined for all of the split's conditions.
    max_cells: cells per condition and per side used by the metrics.
    n_degs: top genes of the DEG recall (PerturBench: 50).
  """
  pops = data.populations
  ids = pops.split_ids(split)
  names = [pops.names[k] for k in ids]
  rng = np.random.default_rng(seed)
  reals = {n: _subsample(data.gene_samples[k], max_cells, rng) for n, k in zip(names, ids)}
  ctrls = {n: _subsample(data.gene_samples[data.control_index[k]], max_cells, rng)
           for n, k in zip(names, ids)}
  groups = {n: data.conditions[k].covariates for n, k in zip(names, ids)}
  rows = {label: {n: _subsample(np.asarray(p[n]), max_cells, rng) for n in names if n in p}
          for label, p in methods.items()}
  for label, p in rows.items():
    missing = sorted(set(names) - set(p))
    if missing:
      raise KeyError(f"{label}: no generated cells for {split} condition(s) {missing}.")
  if baselines:
    b = baselines_lib.Baselines.from_data(data)
    for kind in b.applicable(names):
      rows[f"baseline: {kind}"] = {n: b.predict(n, kind) for n in names}
  pca = mp.fit_pca(list(reals.values()) + list(ctrls.values()))
  return {label: mp.score_conditions(p, reals, ctrls, groups, pca=pca, n_degs=n_degs)
          for label, p in rows.items()}


def table(scores: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
  """Rows = runs and baselines; columns = each metric's mean and its rank's mean."""
  cols = [c for m in mp.METRICS for c in ((m, SHORT[m]), (f"{m}_rank", "rank"))]
  width = max(12, *(len(r) + 2 for r in scores))
  lines = [f"{'':<{width}}" + "".join(f"{h:>10}" for _, h in cols)]
  for label, per in scores.items():
    lines.append(f"{label:<{width}}" + "".join(
        f"{np.mean(list(per[m].values())):>10.4g}" for m, _ in cols))
  return "\n".join(lines)


def run_scores(config: Mapping, samples: Mapping[str, np.ndarray], *, split: str = "heldout",
               label: str = "", n_degs: int = mp.N_DEGS) -> dict:
  """Scores of one run's samples and the baselines (`score`)."""
  config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  data = ap.load_cached(**dataset_kwargs(config))
  reference = data if data.pca is None else ap.load_cached(
      **dict(dataset_kwargs(config), pca_components=0))
  preds = predictions(data, samples, split)
  return score(reference, {label or run_label(config): preds}, split=split, n_degs=n_degs)


def after_evaluation(workdir: str | Path, config: Mapping, samples: Mapping[str, np.ndarray],
                     *, split: str = "heldout", n_degs: int = mp.N_DEGS) -> str | None:
  """For an `anndata_perturbations` run: writes generated.h5ad and perturbench.{txt,json}
  in `workdir` and returns the table; None (nothing written) for other datasets or when
  `split` was not generated."""
  config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  if config["dataset"]["name"] != ap.NAME:
    return None
  generated_cells.write_run(workdir, config, samples)
  if not any(k.startswith(f"{split}/") for k in samples):
    return None
  scores = run_scores(config, samples, split=split, label=Path(workdir).name, n_degs=n_degs)
  text = table(scores)
  Path(workdir, "perturbench.txt").write_text(text + "\n")
  Path(workdir, "perturbench.json").write_text(json.dumps(scores, indent=2))
  return text


def _same_task(a: Mapping, b: Mapping) -> bool:
  strip = lambda c: {k: v for k, v in dataset_kwargs(c).items() if k != "pca_components"}  # noqa: E731
  return strip(a) == strip(b)


def report(workdirs: Sequence[str | Path], *, split: str = "heldout", max_cells: int = 1000,
           n_degs: int = mp.N_DEGS) -> tuple[str, dict]:
  """(table, scores) for runs sharing one dataset and split, plus the baselines."""
  if not workdirs:
    raise ValueError("report needs at least one run directory.")
  runs = [load_run(w) for w in workdirs]
  first = runs[0][0]
  for (config, _), w in zip(runs, workdirs):
    if config["dataset"].get("name") != ap.NAME:
      raise ValueError(f"{w}: dataset {config['dataset'].get('name')!r} is not {ap.NAME!r}.")
    if not _same_task(config, first):
      raise ValueError(f"{w}: its dataset/split differs from {workdirs[0]}'s; runs in one table "
                       "must share the task (only pca_components may differ).")
  methods = {}
  for (config, samples), w in zip(runs, workdirs):
    data = ap.load_cached(**dataset_kwargs(config))
    label = f"{Path(w).name}: {run_label(config)}"
    methods[label] = predictions(data, samples, split)
  reference = ap.load_cached(**dict(dataset_kwargs(first), pca_components=0))
  scores = score(reference, methods, split=split, max_cells=max_cells, n_degs=n_degs)
  return table(scores), scores

"""Single-cell perturbation evaluation: PerturBench metrics of a run and of the baselines.

For `anndata_perturbations` datasets, every run scores the generated cells of
each evaluated split (decoded to gene space, PCA runs included) with
`flowzoo.metrics_perturbation` against the real cells, in `eval.json`'s
format: `results[metric][split] = {"mean", "per_condition"}` for every metric
and its rank version. `add_baselines` scores `flowzoo.baselines` (control,
training mean, additive, cross-covariate) the same way, so the report writer
puts them in one table with the learned methods (`flowzoo.domain_eval` is the
common interface with `compound_eval`). All rows of a split share the real
cells, the control cells and the 30-PC projection fitted on the real cells.

`report(workdirs)` (CLI `python -m experiments.perturbench_eval`) tabulates
finished runs of one task side by side without the report writer, e.g. runs
of different configs; `after_evaluation` writes a run's `generated.h5ad`.
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
from flowzoo.evaluate import subsample
from flowzoo.generated_cells import dataset_kwargs

SCORED_SPLITS = ("heldout", "validation")
# eval.json metric -> higher is better: each PerturBench metric, then its rank.
METRICS = dict(mp.METRICS) | {f"{m}_rank": False for m in mp.METRICS}
# Columns: metric (mean over conditions) and its rank; "^" higher is better.
SHORT = {"mmd_gex": "MMD gex", "mmd_pca": "MMD pca", "deg_recall": "DEG rec^",
         "cosine_logfc": "cos lfc^", "rmse_mean": "RMSE"}


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
  reals = {n: subsample(data.gene_samples[k], max_cells, rng) for n, k in zip(names, ids)}
  ctrls = {n: subsample(data.gene_samples[data.control_index[k]], max_cells, rng)
           for n, k in zip(names, ids)}
  groups = {n: data.conditions[k].covariates for n, k in zip(names, ids)}
  rows = {label: {n: subsample(np.asarray(p[n]), max_cells, rng) for n in names if n in p}
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
               label: str = "", n_degs: int = mp.N_DEGS, baselines: bool = True) -> dict:
  """Scores of one run's samples (and the baselines): `score`."""
  config = _as_dict(config)
  data = ap.load_cached(**dataset_kwargs(config))
  reference = data if data.pca is None else ap.load_cached(
      **dict(dataset_kwargs(config), pca_components=0))
  preds = predictions(data, samples, split)
  return score(reference, {label or run_label(config): preds}, split=split, n_degs=n_degs,
               baselines=baselines)


def after_evaluation(workdir: str | Path, config: Mapping,
                     samples: Mapping[str, np.ndarray]) -> Path | None:
  """Writes an `anndata_perturbations` run's generated.h5ad into `workdir` (its path);
  None for other datasets."""
  config = _as_dict(config)
  if config["dataset"]["name"] != ap.NAME:
    return None
  return generated_cells.write_run(workdir, config, samples)


# -- the `flowzoo.domain_eval` interface ---------------------------------------------------
def applies(config) -> bool:
  """True for an `anndata_perturbations` dataset."""
  return config["dataset"]["name"] == ap.NAME


def comparable(a, b) -> bool:
  """Runs of `a` and `b` share real cells and baselines (only `pca_components` may differ)."""
  return _same_task(_as_dict(a), _as_dict(b))


def _as_dict(config) -> dict:
  return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def _as_results(per: Mapping[str, Mapping[str, float]], split: str) -> dict:
  return {m: {split: {"mean": float(np.mean(list(per[m].values()))),
                      "per_condition": dict(per[m])}} for m in METRICS}


def score_run(config, pops, samples: Mapping[str, np.ndarray], splits: Sequence[str]) -> dict:
  """PerturBench metrics of a run's generated cells (`samples["<split>/<name>"]`).

  `pops` is unused (the gene-space data is loaded from `config`); the argument
  keeps `flowzoo.domain_eval`'s signature.
  """
  del pops
  config = _as_dict(config)
  out = {}
  for split in splits:
    if split in SCORED_SPLITS and any(k.startswith(f"{split}/") for k in samples):
      per = run_scores(config, samples, split=split, label="run", baselines=False)["run"]
      for m, by_split in _as_results(per, split).items():
        out.setdefault(m, {}).update(by_split)
  return out


def add_baselines(config, split: str, results: dict, seeds: Sequence[int]) -> dict:
  """Puts the baselines' results into a report's `results` (one per seed: they are
  deterministic) and returns the `report.summarize` extras for the table.

  Args:
    config: the runs' config (the gene-space dataset is loaded from it).
    split: the tabulated split.
    results: `(point name, seed) -> eval results`, extended in place.
  Returns:
    {"names": baseline point names, "metrics", "higher", "descriptions", "notes"}.
  """
  config = _as_dict(config)
  higher = [m for m, up in METRICS.items() if up]
  data = ap.load_cached(**dict(dataset_kwargs(config), pca_components=0))
  if split not in SCORED_SPLITS or not data.populations.has_split(split):
    return {"names": [], "metrics": list(METRICS), "higher": higher, "descriptions": {},
            "notes": []}
  scores = score(data, {}, split=split)
  names = []
  for label, per in scores.items():
    kind = label.removeprefix("baseline: ")
    names.append(kind)
    for s in seeds:
      results[kind, s] = _as_results(per, split)
  return {"names": names, "metrics": list(METRICS), "higher": higher,
          "descriptions": {k: baselines_lib.KINDS[k] for k in names},
          "notes": ["Ranks: within a cell line, the fraction of the other conditions' "
                    "predictions closer to a condition's real cells than its own (0 = best, "
                    "about 0.5 = random). Baselines use real cells only, no seed."]}


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

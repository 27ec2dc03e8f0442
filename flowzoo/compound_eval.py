"""Held-out compound evaluation: profile metrics of a run and of the trivial baselines.

For compound-screen datasets (`PROFILE_DATASETS`), every run scores its
generated wells of each evaluated split with `flowzoo.metrics_profiles`
(unbiased MMD and energy, mean-profile RMSE, Pearson/cosine of the change
from control, retrieval rank and top-1, MoA accuracy), in `eval.json`'s
format: `results[metric][split] = {"mean", "per_condition"}` (the mean over
compounds ignores NaN, e.g. a compound whose MoA no training compound has).
`baseline_results` scores the `flowzoo.compound_baselines` the same way, so
the report writer puts them in one table with the learned methods.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from flowzoo import compound_baselines
from flowzoo import metrics_profiles as mprof
from flowzoo.data.populations import Populations

PROFILE_DATASETS = ("bbbc021_wells", "bbbc021_cells")
METRICS = mprof.METRICS  # name -> higher is better
SCORED_SPLITS = ("heldout", "validation")
SPLITS_ALL = ("train", "validation", "heldout")


def applies(config) -> bool:
  """True for a compound screen with control wells (without MoA labels, MoA accuracy is NaN)."""
  return config["dataset"]["name"] in PROFILE_DATASETS and bool(
      config["dataset"].get("control_sources", True))


def comparable(a, b) -> bool:
  """Runs of configs `a` and `b` are scored on the same wells (the same dataset section)."""
  return a["dataset"].to_dict() == b["dataset"].to_dict()


class Reference:
  """The real side of one split: wells, controls, retrieval candidates, an MoA classifier.

  Args:
    pops: the dataset (with control `sources` and a "moa" covariate).
    split: the split whose conditions are scored.
  """

  def __init__(self, pops: Populations, split: str):
    self.split = split
    ids = pops.split_ids(split)
    moa = [str(m) for m in pops.covariates.get("moa", [""] * len(pops.names))]
    self.reals = {pops.names[k]: pops.samples[k] for k in ids}
    self.controls = {pops.names[k]: compound_baselines.control_wells(pops, k) for k in ids}
    # Retrieval ranks among the compounds this split may see: scoring the
    # validation split never looks at held-out compounds.
    seen = ("train", "validation") if split == "validation" else SPLITS_ALL
    self.candidates = {pops.names[k]: pops.samples[k]
                       for k in compound_baselines.treated_ids(pops, seen)}
    self.moa = {pops.names[k]: moa[k] for k in ids}
    train = compound_baselines.treated_ids(pops, ("train",))
    labels = [moa[k] for k in train]
    # MoA accuracy needs labels: without 2+ training MoAs it is NaN (not an error).
    self.classifier = mprof.moa_classifier(
        np.concatenate([pops.samples[k] for k in train]),
        np.concatenate([[moa[k]] * len(pops.samples[k]) for k in train])) \
        if len(set(labels) - {""}) >= 2 else None

  def moa_accuracy_of_reals(self) -> float:
    """The classifier's MoA accuracy on this split's real wells (mean over compounds):
    the reference beside generated wells' `moa_accuracy`."""
    known = set(self.classifier.classes_) if self.classifier is not None else set()
    return _nanmean(mprof.moa_accuracy(self.classifier, x, self.moa[c]) if self.moa[c] in known
                    else float("nan") for c, x in self.reals.items())

  def score(self, preds: Mapping[str, np.ndarray]) -> dict:
    """eval.json-format results of `preds` (condition name -> `[n, D]`) on this split."""
    per = mprof.score_compounds(preds, self.reals, self.controls, candidates=self.candidates,
                                moa=self.moa, classifier=self.classifier or _NoClasses())
    per.pop("info")
    return {m: {self.split: {"mean": _nanmean(per[m].values()), "per_condition": per[m]}}
            for m in METRICS}


class _NoClasses:
  """A classifier that knows no MoA: every compound's `moa_accuracy` is NaN."""
  classes_ = ()


def _nanmean(values) -> float:
  v = np.asarray(list(values), np.float64)
  return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def _merge(into: dict, results: dict) -> dict:
  for m, by_split in results.items():
    into.setdefault(m, {}).update(by_split)
  return into


def score_run(config, pops: Populations, samples: Mapping[str, np.ndarray],
              splits: Sequence[str]) -> dict:
  """Profile metrics of a run's generated wells (`samples["<split>/<name>"]`).

  `config` is unused (`pops` holds the wells); it keeps `flowzoo.domain_eval`'s signature.
  """
  del config
  out = {}
  for split in splits:
    if split not in SCORED_SPLITS or not pops.has_split(split):
      continue
    preds = {k.split("/", 1)[1]: v for k, v in samples.items() if k.startswith(f"{split}/")}
    if preds:
      _merge(out, Reference(pops, split).score(preds))
  return out


def baseline_results(pops: Populations, splits: Sequence[str]) -> dict[str, dict]:
  """`{baseline kind: eval.json-format results}` of `compound_baselines` on `splits`."""
  out = {kind: {} for kind in compound_baselines.KINDS}
  for split in splits:
    if split in SCORED_SPLITS and pops.has_split(split):
      for kind, res in _baseline_scores(pops, Reference(pops, split)).items():
        _merge(out[kind], res)
  return out


def _baseline_scores(pops: Populations, ref: Reference) -> dict[str, dict]:
  return {kind: ref.score(preds)
          for kind, preds in compound_baselines.predict(pops, ref.split).items()}


def add_baselines(config, split: str, results: dict, seeds: Sequence[int]) -> dict:
  """Puts the trivial baselines' results into a report's `results` (one per seed: they
  are deterministic) and returns the `report.summarize` extras for the table.

  Args:
    config: the runs' config (its dataset is rebuilt: the baselines need the real wells).
    split: the tabulated split.
    results: `(point name, seed) -> eval results`, extended in place.
  Returns:
    {"names": baseline point names, "metrics", "higher", "descriptions", "notes"}.
  """
  from flowzoo import build  # pylint: disable=import-outside-toplevel
  pops = build.build_dataset(config)
  if split not in SCORED_SPLITS or not pops.has_split(split):
    return {"names": [], "metrics": list(METRICS), "higher": [m for m, up in METRICS.items()
                                                               if up],
            "descriptions": {}, "notes": []}
  ref = Reference(pops, split)
  by_kind = _baseline_scores(pops, ref)
  for kind, res in by_kind.items():
    for s in seeds:
      results[kind, s] = res
  reference = ref.moa_accuracy_of_reals()
  return {"names": list(by_kind), "metrics": list(METRICS),
          "higher": [m for m, up in METRICS.items() if up],
          "descriptions": dict(compound_baselines.KINDS),
          "notes": [f"MoA accuracy of the same classifier on the real {split} wells (a "
                    f"reference, not a bound): {reference:.3g}. Baselines use real wells only, "
                    "no seed."]}

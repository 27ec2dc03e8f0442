"""Rotated letters (MixFlow §5.1): the trivial baselines beside the learned methods.

A held-out rotation r of a letter is predicted from the training rotations
of the same letter without any learning:

* "nearest_rotation": the real points of the training rotation with the
  nearest angle (r - 1; the dataset trains even rotations), i.e. the
  letter 360/R degrees off - what a method that ignores the angle between
  neighbouring training conditions would draw at best;
* "pooled_letter": all training rotations of the letter pooled - what a
  method that ignores the angle altogether would draw.

They are scored with the run's own generic metrics (`config.eval.metrics`,
`flowzoo.metrics`) on the same number of points as a run's evaluation
(`eval.max_samples`), so the report writer puts them in one table with the
learned methods (`flowzoo.domain_eval` interface). Runs add no metrics of
their own here (`score_run` returns none).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from flowzoo import metrics as metrics_lib
from flowzoo.data.populations import Populations
from flowzoo.evaluate import subsample

NAME = "letters"
KINDS = {
    "nearest_rotation": "the real training rotation of the letter with the nearest angle",
    "pooled_letter": "every training rotation of the letter, pooled",
}
# Shown on results pages below the table (`flowzoo.report.results_page`): the
# training letters tell "did not fit" from "did not generalise".
PAGE_FIGURES = ("train_real_vs_generated.png", "heldout_real_vs_generated.png")


def applies(config) -> bool:
  """True for the rotated-letters dataset."""
  return config["dataset"]["name"] == NAME


def comparable(a, b) -> bool:
  """Runs of `a` and `b` are scored on the same letters (the same dataset section)."""
  return a["dataset"].to_dict() == b["dataset"].to_dict()


def score_run(config, pops, samples, splits) -> dict:
  """None beyond `flowzoo.evaluate`'s generic metrics (the `domain_eval` interface)."""
  del config, pops, samples, splits
  return {}


def predict(pops: Populations, split: str) -> dict[str, dict[str, np.ndarray]]:
  """kind -> (condition name -> `[n, 2]` points) for every condition of `split`.

  Raises:
    ValueError: a condition's letter has no training rotation.
  """
  letter = np.asarray(pops.covariates["letter"])
  angle = np.asarray(pops.covariates["angle"], np.float64)
  train = pops.split_ids("train")
  out = {kind: {} for kind in KINDS}
  for k in pops.split_ids(split):
    same = [j for j in train if letter[j] == letter[k]]
    if not same:
      raise ValueError(f"letter {str(letter[k])!r} ({pops.names[k]}) has no training rotation: "
                       "the letters baselines need one.")
    # Circular distance in degrees; ties go to the smaller angle (the earlier condition).
    dist = [min((angle[j] - angle[k]) % 360.0, (angle[k] - angle[j]) % 360.0) for j in same]
    nearest = same[int(np.argmin(dist))]
    out["nearest_rotation"][pops.names[k]] = pops.samples[nearest]
    out["pooled_letter"][pops.names[k]] = np.concatenate([pops.samples[j] for j in same])
  return out


def score_predictions(preds: Mapping[str, np.ndarray], pops: Populations, split: str,
                      metric_names: Sequence[str], max_samples: int, seed: int = 0) -> dict:
  """eval.json-form results of `preds` (condition -> `[n, D]`) against the real points,
  each side subsampled to at most `max_samples` points."""
  rng = np.random.default_rng(seed)
  per = {m: {} for m in metric_names}
  for k in pops.split_ids(split):
    name = pops.names[k]
    fake, real = (subsample(x, max_samples, rng) for x in (np.asarray(preds[name]),
                                                           pops.samples[k]))
    for m, v in metrics_lib.compute_all(fake, real, names=metric_names).items():
      per[m][name] = v
  return {m: {split: {"mean": float(np.mean(list(per[m].values()))), "per_condition": per[m]}}
          for m in metric_names}


def add_baselines(config, split: str, results: dict, seeds: Sequence[int]) -> dict:
  """Puts the letters baselines' results into a report's `results` (one per seed: they
  are deterministic) and returns the `report.summarize` extras for the table."""
  from flowzoo import build  # pylint: disable=import-outside-toplevel
  pops = build.build_dataset(config)
  metrics = list(config.eval.metrics)
  if not pops.has_split(split):
    return {"names": [], "metrics": metrics, "higher": [], "descriptions": {}, "notes": []}
  names = []
  for kind, preds in predict(pops, split).items():
    scored = score_predictions(preds, pops, split, metrics, config.eval.max_samples)
    names.append(kind)
    for s in seeds:
      results[kind, s] = scored
  return {"names": names, "metrics": metrics, "higher": [], "descriptions": dict(KINDS),
          "notes": ["Baselines use real training points only, no seed."]}

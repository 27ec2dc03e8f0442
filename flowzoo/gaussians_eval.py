"""Families of Gaussians (WFM §4.1, Table 2): the trivial baselines beside BW-FM.

WFM Table 2's metric (`bw_min_w2`: mean over generated Gaussians of the
minimum W2^2 to the dataset) is one-sided: any subset of the dataset itself
scores 0, so "copy the training set" is its floor, not a baseline. Two
predictors that learn nothing give the bar a flow has to clear:

* "source": the run's source distribution, unmoved: draws of the config's
  base (the Wishart source of WFM App. D, fitted on the training Gaussians
  as the run fits it), i.e. what a zero velocity field generates;
* "barycenter": one Gaussian per condition, the W2 barycentre of its real
  Gaussians (mean of the means, BW barycentre of the covariances), i.e. a
  generator collapsed onto the family's centre.

Each draws as many Gaussians per condition as a run's evaluation
(`eval.samples_per_condition`, else the population's size) and is scored by
`flowzoo.evaluate.score_condition` with the run's metrics and subsampling
(`eval.max_samples`), so the report writer puts them in one table with the
learned methods (the `flowzoo.domain_eval` interface). Runs add no metrics of
their own here: `flowzoo.methods.bwfm` already scores Table 2's.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from flowzoo import evaluate
from flowzoo.geometry import bures

# Datasets whose samples are packed Gaussians `[D + 1, D]` (flowzoo.data.gaussians*).
DATASETS = ("gaussian_spiral", "gaussian_moons", "gaussian_sphere", "pbmc_metacells",
            "seqfish_niches")
KINDS = {
    "source": "the run's source Gaussians (its base, e.g. Wishart), not moved (zero velocity)",
    "barycenter": "one Gaussian per condition: the W2 barycentre of its real Gaussians",
}


def applies(config) -> bool:
  """True for a dataset of Gaussians."""
  return config["dataset"]["name"] in DATASETS


def comparable(a, b) -> bool:
  """Runs of `a` and `b` are scored on the same Gaussians (same dataset section)."""
  return a["dataset"].to_dict() == b["dataset"].to_dict()


def score_run(config, pops, samples, splits) -> dict:
  """None beyond the method's Table 2 metrics (the `domain_eval` interface)."""
  del config, pops, samples, splits
  return {}


def barycenter(x: np.ndarray, num_iters: int = 50) -> np.ndarray:
  """W2 barycentre `[D + 1, D]` of packed Gaussians `x` `[N, D + 1, D]` (equal weights)."""
  m, cov = bures.unpack_gaussians(np.asarray(x, np.float32))
  bary = bures.bw_barycenter(cov, num_iters)
  return np.asarray(bures.pack_gaussians(m.mean(0), bary))


def source_draws(config, pops, n: int, seed: int) -> np.ndarray:
  """`[n, D + 1, D]` draws of `config.base` fitted on the training Gaussians, as a run fits it."""
  from flowzoo import build  # pylint: disable=import-outside-toplevel
  from flowzoo.registry import BASES  # pylint: disable=import-outside-toplevel
  base = build.build(BASES, config.base, "base", warn_unused=False,
                     event_shape=pops.event_shape, cond_dim=pops.cond_dim)
  ids = pops.split_ids("train")  # (raises when there is none)
  x = np.concatenate([pops.samples[k] for k in ids])
  groups = np.repeat(ids, [len(pops.samples[k]) for k in ids])
  params = base.init_from_data(None, x, groups, seed=seed)
  batch = {"cond": np.zeros((n, max(pops.cond_dim, 1)), np.float32)}
  return np.asarray(base.sample(params, jax.random.key(seed), batch))


def add_baselines(config, split: str, results: dict, seeds: Sequence[int]) -> dict:
  """Puts the baselines' results into a report's `results` (`(kind, seed) -> results`, the
  source drawn per seed) and returns the `report.summarize` extras for the table."""
  from flowzoo import build  # pylint: disable=import-outside-toplevel
  pops = build.build_dataset(config)
  metrics = list(config.eval.metrics)
  empty = {"names": [], "metrics": metrics, "higher": [], "descriptions": {}, "notes": []}
  if not pops.has_split(split):
    return empty
  ids = pops.split_ids(split)
  counts = [config.eval.samples_per_condition or len(pops.samples[k]) for k in ids]

  def scored(fakes, seed):
    rng = np.random.default_rng(seed)
    per = {m: {} for m in metrics}
    for k, fake in zip(ids, fakes):
      vals = evaluate.score_condition(evaluate.subsample(fake, config.eval.max_samples, rng),
                                      evaluate.subsample(pops.samples[k], config.eval.max_samples,
                                                         rng),
                                      metrics, bures.METRICS)
      for m in metrics:
        per[m][pops.names[k]] = vals[m]
    return {m: {split: {"mean": float(np.mean(list(per[m].values()))), "per_condition": per[m]}}
            for m in metrics}

  centres = [np.repeat(barycenter(pops.samples[k])[None], c, 0) for k, c in zip(ids, counts)]
  for s in seeds:  # (each seed subsamples the real Gaussians afresh, as a run's evaluation)
    draws = source_draws(config, pops, sum(counts), s)
    results["source", s] = scored(np.split(draws, np.cumsum(counts)[:-1]), s)
    results["barycenter", s] = scored(centres, s)
  return {"names": list(KINDS), "metrics": metrics, "higher": [], "descriptions": dict(KINDS),
          "notes": ["Baselines learn nothing. The dataset itself scores 0 on bw_min_w2 "
                    "(Table 2's metric is one-sided), so 0 is its floor, not a baseline."]}

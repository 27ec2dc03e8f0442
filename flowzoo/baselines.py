"""Simple baselines for perturbation response prediction (PerturBench; Ahlmann-Eltze et al. 2025).

Each predicts the cells of a condition p in covariate context g as the real
control cells of g shifted by a mean effect learned from TRAINING conditions
only (mu(.) = per-gene mean expression, C_g = control cells of g):

* "control":         C_g (no effect; PerturBench's lower bar).
* "train_mean":      C_g + mean_{q in train(g), q not control} (mu(q) - mu(C_g)),
                     the average training effect in g (condition-weighted).
* "additive":        C_g + sum_{s in singles(p)} (mu(s, g) - mu(C_g)) for a
                     combination "A+B" whose singles were measured alone in g
                     (the additive model of Norman et al. 2019 / PerturBench).
* "cross_covariate": C_g + mean_{g' != g, (p, g') in train} (mu(p, g') - mu(C_g')),
                     the perturbation's effect in the other contexts
                     (covariate transfer).

Shifting every control cell keeps the control's spread and moves the mean
exactly to the predicted mean; no clipping at 0, so the mean is exact even
where log1p expression would be negative.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from flowzoo.data.perturbation_encoding import Condition

# kind -> what it predicts (the tables' "what it is" column).
KINDS = {
    "control": "the context's control cells (no effect)",
    "train_mean": "control + the mean training effect in the context",
    "additive": "control + the sum of the singles' mean shifts (combinations)",
    "cross_covariate": "control + the perturbation's mean shift in the other contexts",
}


class Baselines:
  """Mean-shift baselines fitted on the training conditions (module docstring).

  Args:
    conditions: K conditions.
    cells: K arrays `[n_k, G]` of gene-space cells.
    splits: K split labels; only "train" conditions inform a baseline.
    control_index: `[K]` index of each condition's context control.
  """

  def __init__(self, conditions: Sequence[Condition], cells: Sequence[np.ndarray],
               splits: Sequence[str], control_index: Sequence[int]):
    if not len(conditions) == len(cells) == len(splits) == len(control_index):
      raise ValueError("Baselines: conditions, cells, splits and control_index differ in length.")
    self.conditions = list(conditions)
    self.cells = [np.asarray(c, np.float64) for c in cells]
    self.splits = list(splits)
    self.control_index = list(control_index)
    self.means = [c.mean(0) for c in self.cells]

  @classmethod
  def from_data(cls, data) -> "Baselines":
    """From an `anndata_perturbations.PerturbationData`."""
    return cls(data.conditions, data.gene_samples, data.populations.splits, data.control_index)

  def _index(self, name: str) -> int:
    names = [c.name for c in self.conditions]
    if name not in names:
      raise KeyError(f"Baselines: unknown condition {name!r}.")
    return names.index(name)

  def _effect(self, k: int) -> np.ndarray:
    """mu(condition k) - mu(its context's control)."""
    return self.means[k] - self.means[self.control_index[k]]

  def _train(self, pred) -> list[int]:
    return [k for k, (c, s) in enumerate(zip(self.conditions, self.splits))
            if s == "train" and not c.is_control and pred(c)]

  def shift(self, name: str, kind: str) -> np.ndarray:
    """The predicted mean effect `[G]` of `kind` for condition `name`.

    Raises:
      ValueError: when `kind` is undefined for the condition (says why).
    """
    if kind not in KINDS:
      raise KeyError(f"Unknown baseline {kind!r}; valid: {list(KINDS)}.")
    k = self._index(name)
    c = self.conditions[k]
    g = c.covariates
    if kind == "control":
      return np.zeros_like(self.means[k])
    if kind == "train_mean":
      ids = self._train(lambda q: q.covariates == g)
      if not ids:
        raise ValueError(f"train_mean: no training perturbation in context {g} for {name!r}.")
      return np.mean([self._effect(q) for q in ids], axis=0)
    if kind == "additive":
      if not c.is_combination:
        raise ValueError(f"additive: {name!r} is not a combination.")
      total = np.zeros_like(self.means[k])
      for s in c.singles:
        ids = self._train(lambda q, s=s: q.singles == (s,) and q.covariates == g)
        if not ids:
          raise ValueError(f"additive: single {s!r} of {name!r} is not a training condition "
                           f"in context {g}.")
        total += np.mean([self._effect(q) for q in ids], axis=0)  # doses averaged
      return total
    ids = self._train(lambda q: q.perturbation == c.perturbation and q.covariates != g)
    if not ids:
      raise ValueError(f"cross_covariate: {c.perturbation!r} is not a training condition in "
                       f"any context other than {g}.")
    return np.mean([self._effect(q) for q in ids], axis=0)

  def predict(self, name: str, kind: str) -> np.ndarray:
    """`[m, G]` predicted cells: the context's control cells + `shift(name, kind)`."""
    shift = self.shift(name, kind)
    return self.cells[self.control_index[self._index(name)]] + shift[None]

  def applicable(self, names: Sequence[str]) -> list[str]:
    """The kinds defined for every condition in `names` (in `KINDS` order)."""
    out = []
    for kind in KINDS:
      try:
        for n in names:
          self.shift(n, kind)
      except ValueError:
        continue
      out.append(kind)
    return out

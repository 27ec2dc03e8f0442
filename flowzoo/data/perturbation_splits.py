"""PerturBench's out-of-distribution splits of perturbation conditions.

Two tasks (PerturBench, Wu et al. 2024; PRiMeFlow §4, App. D):

* "combo" (combination prediction, Norman19): two-gene combinations are held
  out while each of their singles is observed ALONE in training in the same
  covariate context, so the model must compose seen effects (and the additive
  baseline, control + sum of single shifts, is defined).
* "covariate" (covariate transfer, Srivatsan20 / McFaline23 / Jiang24): a
  perturbation is held out in one covariate context (cell line) while it stays
  observed in at least one other context ("30% of perturbations ... while
  ensuring they have been observed in the other cell lines", PRiMeFlow App. D).

Held-out conditions are named explicitly (`heldout`) or drawn with a seed
(`heldout_fraction` of the eligible ones). `num_validation` further eligible
training conditions become "validation" (checkpoint selection without looking
at the held-out ones); they are drawn after the held-out set, with the same
eligibility rule, so validation mimics the test task. Controls always train.
"""

from __future__ import annotations

import difflib
from typing import Sequence

import numpy as np

from flowzoo.data.perturbation_encoding import Condition

TASKS = ("combo", "covariate", "none")


def resolve(conditions: Sequence[Condition], entries: Sequence[str],
            empty: Sequence[str] = ()) -> list[int]:
  """Indices of the conditions named by `entries` (condition names or perturbation labels).

  Args:
    empty: labels present in the data's categories but without cells, so that
      naming one gets "has no cells" rather than "unknown".
  """
  by_name = {c.name: i for i, c in enumerate(conditions)}
  out = []
  for e in entries:
    if e in by_name:
      out.append(by_name[e])
      continue
    hits = [i for i, c in enumerate(conditions) if c.perturbation == e]
    if hits:
      out.extend(hits)
      continue
    if e in empty:
      raise ValueError(f"held-out condition {e!r} has no cells (an empty category of the "
                       "perturbation column); an empty condition cannot be evaluated.")
    close = difflib.get_close_matches(e, list(by_name), n=3)
    raise ValueError(f"held-out entry {e!r} is neither a condition nor a perturbation of the "
                     f"data{f'; did you mean {close}' if close else ''} (conditions are named "
                     f"'perturbation|covariates...', e.g. {list(by_name)[:3]}).")
  return sorted(set(out))


def _combo_problem(c: Condition, train_singles: set, trained: set) -> str:
  """Why `c` is not a valid held-out combination ("" if it is).

  Args:
    train_singles: (single, covariates) of the training single-perturbation conditions.
    trained: every single in any training condition (the trained multi-hot columns).
  """
  if c.is_control:
    return f"{c.name!r} is a control (controls always train)"
  if not c.is_combination:
    return f"{c.name!r} is a single perturbation, not a combination"
  never = [s for s in c.singles if s not in trained]
  if never:
    return (f"combination {c.name!r}: single(s) {never} are never seen in training, so the "
            "multi-hot encoding cannot represent this combination (no trained column) and "
            "the additive baseline is undefined")
  alone = [s for s in c.singles if (s, c.covariates) not in train_singles]
  if alone:
    return (f"combination {c.name!r}: single(s) {alone} are seen in training only inside "
            f"other combinations, never alone in context {c.covariates}; the combination task "
            "needs each single observed alone (PerturBench's combo split; the additive "
            "baseline is undefined otherwise)")
  return ""


def _covariate_problem(c: Condition, train: set, group_of: dict) -> str:
  if c.is_control:
    return f"{c.name!r} is a control (controls always train)"
  others = [g for g in group_of.get(c.perturbation, ()) if g != c.covariates
            and (c.perturbation, g) in train]
  if not others:
    return (f"{c.name!r}: perturbation {c.perturbation!r} is not observed in training in any "
            "other covariate context, so covariate transfer has nothing to transfer from")
  return ""


def assign_splits(conditions: Sequence[Condition], *, task: str = "combo",
                  heldout: Sequence[str] = (), heldout_fraction: float = 0.3,
                  num_validation: int = 0, seed: int = 0,
                  empty: Sequence[str] = ()) -> list[str]:
  """Split label ("train" / "validation" / "heldout") of every condition (module docstring).

  Args:
    conditions: all conditions of the data.
    task: "combo", "covariate" or "none" (everything trains; `num_validation`
      draws from all perturbed conditions).
    heldout: condition names or perturbation labels to hold out; () draws
      `heldout_fraction` of the eligible conditions with `seed`.
    num_validation: eligible training conditions moved to "validation".
    empty: perturbation labels without cells (for error messages).
  Raises:
    ValueError: an ineligible held-out condition (with the reason), too few
      eligible conditions, or a bad argument.
  """
  if task not in TASKS:
    raise ValueError(f"split must be one of {TASKS}, got {task!r}.")
  if task == "none" and heldout:
    raise ValueError("split='none' holds nothing out; use 'combo' or 'covariate' with heldout.")
  if not 0.0 <= heldout_fraction < 1.0:
    raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}.")
  if num_validation < 0:
    raise ValueError(f"num_validation must be >= 0, got {num_validation}.")
  rng = np.random.default_rng([seed, 20])
  labels = ["train"] * len(conditions)

  def problem(i: int) -> str:
    c = conditions[i]
    train_ids = [j for j, s in enumerate(labels) if s == "train" and j != i]
    if task == "combo":
      singles = {(conditions[j].singles[0], conditions[j].covariates) for j in train_ids
                 if len(conditions[j].singles) == 1}
      return _combo_problem(c, singles, {s for j in train_ids for s in conditions[j].singles})
    if task == "covariate":
      train = {(conditions[j].perturbation, conditions[j].covariates) for j in train_ids}
      group_of = {}
      for j in train_ids:
        group_of.setdefault(conditions[j].perturbation, []).append(conditions[j].covariates)
      return _covariate_problem(c, train, group_of)
    return "" if not c.is_control else f"{c.name!r} is a control"

  def draw(n: int, what: str, order: list[int]) -> list[int]:
    """Greedily takes up to n eligible conditions in `order` (re-checking each)."""
    taken = []
    for i in order:
      if len(taken) == n:
        break
      if labels[i] == "train" and not problem(i):
        labels[i] = what
        taken.append(i)
    return taken

  # 1. Held-out conditions: named ones must be eligible, else a seeded draw.
  if heldout:
    ids = resolve(conditions, heldout, empty)
    for i in ids:
      why = problem(i)
      if why:
        raise ValueError(f"split={task!r}: cannot hold out {why}.")
      labels[i] = "heldout"
  elif task != "none":
    eligible = [i for i in range(len(conditions)) if not problem(i)]
    if not eligible:
      raise ValueError(f"split={task!r}: no condition is eligible to be held out (see "
                       "flowzoo/data/perturbation_splits.py for the rule).")
    n = max(1, int(round(heldout_fraction * len(eligible)))) if heldout_fraction else 0
    if task == "covariate":
      # Per covariate context, as PerturBench draws a fraction in each cell line.
      taken = []
      for g in sorted({conditions[i].covariates for i in eligible}):
        in_g = [i for i in eligible if conditions[i].covariates == g]
        k = int(round(heldout_fraction * len(in_g)))
        taken += draw(k, "heldout", list(rng.permutation(in_g)))
      if not taken and heldout_fraction:
        draw(1, "heldout", list(rng.permutation(eligible)))
    else:
      draw(n, "heldout", list(rng.permutation(eligible)))

  # 2. Validation: more eligible training conditions, same rule.
  if num_validation:
    order = list(rng.permutation(len(conditions)))
    got = draw(num_validation, "validation", order)
    if len(got) < num_validation:
      raise ValueError(f"split={task!r}: num_validation={num_validation} but only {len(got)} "
                       "training condition(s) are eligible after holding out "
                       f"{labels.count('heldout')}; lower num_validation.")
  return labels

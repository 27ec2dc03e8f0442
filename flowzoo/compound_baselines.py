"""Trivial baselines for held-out compounds of a screen (issue 19; PerturBench practice).

Every comparison of compound-profile predictions shows these beside the
learned methods. For a held-out compound p with real wells R_p on plates
P(p), C_p = the control (DMSO) wells of the plates P(p), y_p its descriptor,
and T the training compounds (controls excluded):

* "control":   C_p, "the compound does nothing".
* "pooled":    the wells of all training compounds pooled, the screen's
               average treated well (what a model that ignores y predicts).
* "nearest":   R_q of the training compound q = argmin_{q in T} ||y_q - y_p||
               (Euclidean distance of descriptors; the first of ties).
* "linear":    C_p + Ridge(y_p): the compound's mean shift from control,
               mean(R_q) - mean(C_q), regressed on descriptors over T by
               ridge regression (`sklearn.linear_model.RidgeCV`, the penalty
               chosen by leave-one-out over T only), added to every control
               well of p's plates.

All use real wells only and no randomness, so they are the same for every
seed. Shapes: wells `[n, D]`, descriptors `[C]`.
"""

from __future__ import annotations

import numpy as np

from flowzoo.data.populations import Populations

# kind -> what it predicts (the table's arms list).
KINDS = {"control": "baseline: the control wells of the compound's plates",
         "pooled": "baseline: all training compounds' wells pooled",
         "nearest": "baseline: the wells of the training compound with the nearest descriptor",
         "linear": "baseline: control wells + mean shift ridge-regressed on descriptors"}
RIDGE_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def control_wells(pops: Populations, k: int) -> np.ndarray:
  """`[c, D]` control wells of condition k's plates (its sources restricted to them)."""
  if pops.sources is None:
    raise ValueError(f"condition {pops.names[k]!r}: the dataset has no control wells (`sources`); "
                     "load it with control_sources=True.")
  src = pops.sources[k]
  if pops.sample_plates is None or pops.source_plates is None:
    return src
  own = np.isin(pops.source_plates[k], np.unique(pops.sample_plates[k]))
  return src[own] if own.any() else src


def is_control(pops: Populations, k: int) -> bool:
  """Whether condition k is the control: the loader's "control" covariate, else (datasets
  without it) the zero descriptor of the convention (a descriptor PCA moves it off zero)."""
  flags = pops.covariates.get("control")
  return bool(flags[k]) if flags is not None else not np.any(pops.descriptors[k])


def treated_ids(pops: Populations, splits: tuple[str, ...]) -> np.ndarray:
  """Conditions of `splits` that are not the control."""
  return np.asarray([k for k, s in enumerate(pops.splits)
                     if s in splits and not is_control(pops, k)], np.int64)


def _train_ids(pops: Populations) -> np.ndarray:
  """Training conditions that are not the control."""
  ids = treated_ids(pops, ("train",))
  if not ids.size:
    raise ValueError("compound baselines need at least one treated training compound.")
  return ids


def predict(pops: Populations, split: str = "heldout") -> dict[str, dict[str, np.ndarray]]:
  """`{kind: {condition name: [n, D] predicted wells}}` for every condition of `split`."""
  train = _train_ids(pops)
  ids = pops.split_ids(split)
  pooled = np.concatenate([pops.samples[q] for q in train])
  y_train = pops.descriptors[train]
  shifts = np.stack([pops.samples[q].mean(0) - control_wells(pops, q).mean(0) for q in train])
  from sklearn.linear_model import RidgeCV  # pylint: disable=import-outside-toplevel
  ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(y_train, shifts)
  out = {kind: {} for kind in KINDS}
  for k in ids:
    name, ctrl = pops.names[k], control_wells(pops, k)
    q = train[int(np.argmin(np.linalg.norm(y_train - pops.descriptors[k], axis=1)))]
    out["control"][name] = ctrl
    out["pooled"][name] = pooled
    out["nearest"][name] = pops.samples[q]
    out["linear"][name] = ctrl + ridge.predict(pops.descriptors[k][None])[0]
  return out

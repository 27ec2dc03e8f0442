"""Trivial baselines for held-out compounds and their scoring beside the learned methods."""

import numpy as np
import pytest

from flowzoo import compound_baselines, compound_eval
from flowzoo.data.populations import Populations

W = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])  # shift = y @ W, exactly linear


def _pops():
  """Two plates; 5 training compounds with shifts linear in y, one held-out compound H."""
  rng = np.random.default_rng(0)
  ctrl = {"p0": rng.normal(size=(4, 3)), "p1": rng.normal(size=(4, 3)) + 10.0}
  ys = {"A": [1.0, 0.0], "B": [0.0, 1.0], "C": [1.0, 1.0], "D": [2.0, 0.5], "E": [0.5, 2.0],
        "H": [0.9, 0.1]}
  plate = {"A": "p0", "B": "p1", "C": "p0", "D": "p1", "E": "p0", "H": "p1"}
  names, samples, descs, splits_, sources, sp, srcp, moa = [], [], [], [], [], [], [], []
  for name in ["DMSO", *ys]:
    y = np.zeros(2) if name == "DMSO" else np.asarray(ys[name])
    p = ["p0", "p1"] if name == "DMSO" else [plate[name]]
    c = np.concatenate([ctrl[q] for q in p])
    wells = c + y @ W + 0.01 * rng.normal(size=c.shape)
    names.append(name)
    samples.append(wells)
    descs.append(y)
    splits_.append("heldout" if name == "H" else "train")
    sources.append(c)
    sp.append(np.repeat(p, 4))
    srcp.append(np.repeat(p, 4))
    moa.append("ctrl" if name == "DMSO" else "m1" if y[0] >= y[1] else "m2")
  return Populations(names=names, samples=samples, descriptors=np.stack(descs), splits=splits_,
                     sources=sources, sample_plates=sp, source_plates=srcp,
                     pairing="same_plate", covariates={"moa": moa})


def test_each_baseline_on_a_constructed_screen():
  pops = _pops()
  pred = compound_baselines.predict(pops, "heldout")
  assert set(pred) == set(compound_baselines.KINDS)
  k = pops.names.index("H")
  # control: the 4 control wells of H's plate p1 only (p1's are offset by +10).
  np.testing.assert_array_equal(pred["control"]["H"], pops.sources[k])
  assert pred["control"]["H"].shape == (4, 3) and pred["control"]["H"].mean() > 5
  # pooled: every training compound's wells, not the control's.
  assert pred["pooled"]["H"].shape == (5 * 4, 3)
  # nearest by descriptor: A = (1, 0) is nearest to H = (0.9, 0.1).
  np.testing.assert_array_equal(pred["nearest"]["H"], pops.samples[pops.names.index("A")])
  # linear: shifts are exactly y @ W, so ridge recovers H's shift (0.9, 0.1) @ W.
  got = pred["linear"]["H"].mean(0) - pops.sources[k].mean(0)
  np.testing.assert_allclose(got, np.array([0.9, 0.1]) @ W, atol=0.05)


def test_scoring_puts_baselines_in_eval_json_form():
  pops = _pops()
  res = compound_eval.baseline_results(pops, ["heldout"])
  for kind in compound_baselines.KINDS:
    assert set(res[kind]) == set(compound_eval.METRICS)
    assert set(res[kind]["rmse_mean"]["heldout"]["per_condition"]) == {"H"}
  # The linear baseline has H's mean almost exactly; the control misses it by the shift.
  rmse = {kind: res[kind]["rmse_mean"]["heldout"]["mean"] for kind in res}
  assert rmse["linear"] < 0.05 < rmse["control"]
  assert res["control"]["pearson_delta"]["heldout"]["mean"] == 0.0  # no change predicted
  # The real wells themselves retrieve their own profile first.
  ref = compound_eval.Reference(pops, "heldout")
  oracle = ref.score({"H": pops.samples[pops.names.index("H")]})
  assert oracle["top1"]["heldout"]["mean"] == 1.0 and oracle["retrieval_rank"]["heldout"]["mean"] == 0.0


def test_baselines_need_treated_training_compounds():
  pops = _pops()
  only_ctrl = Populations(names=pops.names, samples=pops.samples, descriptors=pops.descriptors,
                          splits=["train"] + ["heldout"] * 6, sources=pops.sources)
  with pytest.raises(ValueError, match="at least one treated training compound"):
    compound_baselines.predict(only_ctrl, "heldout")

"""The letters baselines: which training rotation they copy, and their rows in a report."""

import numpy as np
import pytest

from experiments.configs import cfm_letters
from flowzoo import domain_eval, letters_eval, metrics
from flowzoo.data.letters import letters


@pytest.fixture(scope="module")
def pops():
  return letters(letters="SL", num_rotations=4, val_letter="S", copies=1, points_per_copy=30)


def test_nearest_and_pooled_rotations(pops):
  preds = letters_eval.predict(pops, "heldout")
  idx = {n: k for k, n in enumerate(pops.names)}
  assert sorted(preds["nearest_rotation"]) == ["S_r01", "S_r03"]
  # r01: r00 and r02 are equally near, the smaller wins; r03: r00 (wrapping) and r02 tie.
  np.testing.assert_array_equal(preds["nearest_rotation"]["S_r01"], pops.samples[idx["S_r00"]])
  np.testing.assert_array_equal(preds["nearest_rotation"]["S_r03"], pops.samples[idx["S_r00"]])
  pooled = np.concatenate([pops.samples[idx["S_r00"]], pops.samples[idx["S_r02"]]])
  np.testing.assert_array_equal(preds["pooled_letter"]["S_r01"], pooled)  # no L points


def test_scores_are_the_generic_metrics(pops):
  preds = letters_eval.predict(pops, "heldout")["nearest_rotation"]
  res = letters_eval.score_predictions(preds, pops, "heldout", ["w1", "mmd"], max_samples=1000)
  k = pops.names.index("S_r01")
  want = metrics.compute_all(preds["S_r01"], pops.samples[k], names=["w1"])["w1"]
  assert res["w1"]["heldout"]["per_condition"]["S_r01"] == pytest.approx(want)
  assert res["w1"]["heldout"]["mean"] > 0  # a rotated letter is not the letter


def test_a_letters_config_gets_baseline_rows():
  config = cfm_letters.get_config("runlocal")
  assert domain_eval.for_config(config) is letters_eval
  results = {}
  extras = letters_eval.add_baselines(config, "heldout", results, [0, 1])
  assert extras["names"] == list(letters_eval.KINDS) and extras["higher"] == []
  assert set(results) == {(k, s) for k in letters_eval.KINDS for s in (0, 1)}
  for kind in letters_eval.KINDS:
    assert results[kind, 0] == results[kind, 1]  # deterministic: one row for every seed
    assert set(results[kind, 0]) == set(config.eval.metrics)
    assert results[kind, 0]["w1"]["heldout"]["mean"] > 0.1  # neither is the held-out letter


def test_a_letter_without_training_rotation_is_refused_by_name():
  from flowzoo.data.populations import Populations
  pts = np.zeros((5, 2), np.float32)
  pops = Populations(names=["S_r00", "H_r01"], samples=[pts, pts], descriptors=np.eye(2),
                     splits=["train", "heldout"],
                     covariates={"letter": ["S", "H"], "angle": [0.0, 90.0]})
  with pytest.raises(ValueError, match=r"letter 'H' \(H_r01\) has no training rotation"):
    letters_eval.predict(pops, "heldout")

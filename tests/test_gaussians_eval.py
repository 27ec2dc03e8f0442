"""The Gaussian-family baselines of BW-FM tables: what they predict and how they are scored."""

import numpy as np
import pytest

from experiments.configs import bwfm_spiral
from flowzoo import build, domain_eval, gaussians_eval
from flowzoo.geometry import bures


def test_barycenter_of_commuting_covariances_is_the_closed_form():
  # Diagonal covariances commute: the BW barycentre is (mean of the square roots)^2.
  diag = np.array([[1.0, 4.0], [9.0, 0.25], [0.25, 1.0]])
  means = np.array([[0.0, 1.0], [2.0, -1.0], [1.0, 3.0]])
  x = np.asarray(bures.pack_gaussians(means, np.stack([np.diag(d) for d in diag])))
  out = gaussians_eval.barycenter(x, num_iters=100)
  m, cov = bures.unpack_gaussians(out)
  np.testing.assert_allclose(m, means.mean(0), rtol=1e-6)
  np.testing.assert_allclose(cov, np.diag(np.sqrt(diag).mean(0) ** 2), rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def spiral():
  config = bwfm_spiral.get_config("spiral16,runlocal")
  results = {}
  extras = gaussians_eval.add_baselines(config, "train", results, [0, 1])
  return config, build.build_dataset(config), results, extras


def test_a_bwfm_config_gets_both_baseline_rows(spiral):
  config, _, results, extras = spiral
  assert domain_eval.for_config(config) is gaussians_eval
  assert extras["names"] == list(gaussians_eval.KINDS) and extras["higher"] == []
  assert set(results) == {(k, s) for k in gaussians_eval.KINDS for s in (0, 1)}
  for r in results.values():
    assert set(r) == set(config.eval.metrics) == {"bw_min_w2", "bw_min_w2_cov"}


def test_barycenter_row_is_the_min_w2_of_the_centre_to_the_family(spiral):
  _, pops, results, _ = spiral
  x = pops.samples[0].astype(np.float64)  # the spiral is one condition
  bary = gaussians_eval.barycenter(x)
  m0, c0 = bures.unpack_gaussians(np.repeat(bary[None], len(x), 0).astype(np.float64))
  m1, c1 = bures.unpack_gaussians(x)
  want = float(np.min(np.asarray(bures.w2_sq(m0, c0, m1, c1))))
  got = results["barycenter", 0]["bw_min_w2"]["train"]["mean"]
  assert got == pytest.approx(want, rel=1e-3)
  assert got > 0.01  # the spiral's centre is far from every member
  assert results["barycenter", 0] == results["barycenter", 1]  # no randomness


def test_source_row_draws_the_fitted_wishart_source_per_seed(spiral):
  config, pops, results, _ = spiral
  a, b = (gaussians_eval.source_draws(config, pops, 2000, s) for s in (0, 1))
  np.testing.assert_array_equal(a, gaussians_eval.source_draws(config, pops, 2000, 0))
  assert not np.allclose(a, b)
  m_data, _ = bures.unpack_gaussians(pops.samples[0])
  m_src, c_src = bures.unpack_gaussians(a)
  # Means ~ N(mean of the data means, their spread^2) (WFM App. D): the draws' mean
  # is within 5 standard errors of it.
  np.testing.assert_array_less(np.abs(m_src.mean(0) - m_data.mean(0)),
                               5 * m_data.std(0) / np.sqrt(len(a)))
  assert np.all(np.linalg.eigvalsh(c_src) > 0)
  src = [results["source", s]["bw_min_w2"]["train"]["mean"] for s in (0, 1)]
  assert src[0] != src[1] and min(src) > 0

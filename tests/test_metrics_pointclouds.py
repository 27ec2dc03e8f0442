"""Point-cloud 1-NNA with Chamfer distance and EMD."""

import numpy as np
import pytest

from flowzoo import metrics_pointclouds as mp
from flowzoo.methods.wfm import WFM


def test_chamfer_and_emd_closed_forms():
  x = np.array([[0.0, 0.0], [1.0, 0.0]])
  y = np.array([[0.0, 1.0], [1.0, 1.0]])
  # Every point is 1 away from its partner: CD = 1 + 1 (squared), EMD = 1.
  assert mp.chamfer(x, y) == pytest.approx(2.0)
  assert mp.emd(x, y) == pytest.approx(1.0)
  # Unequal sizes: all mass of one point moves to two points at distance 1 and 3.
  a = np.array([[0.0, 0.0]])
  b = np.array([[1.0, 0.0], [3.0, 0.0]])
  assert mp.emd(a, b) == pytest.approx(2.0)
  assert mp.chamfer(a, b) == pytest.approx(1.0 + (1.0 + 9.0) / 2)
  # EMD is a matching, Chamfer is not: duplicates fool Chamfer only.
  c = np.array([[0.0, 0.0], [0.0, 0.0]])
  d = np.array([[0.0, 0.0], [2.0, 0.0]])
  assert mp.emd(c, d) == pytest.approx(1.0)
  assert mp.chamfer(c, d) == pytest.approx(0.0 + 4.0 / 2)


def test_emd_unequal_sizes_matches_replicated_assignment():
  # With sizes 2 and 4, W1 equals the assignment between x repeated twice and y.
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(2, 3)), rng.normal(size=(4, 3))
  assert mp.emd(x, y) == pytest.approx(mp.emd(np.repeat(x, 2, 0), y), rel=1e-9)


def test_one_nn_accuracy_extremes():
  rng = np.random.default_rng(0)
  real = rng.normal(size=(20, 6, 2))
  # Far-away fakes: every cloud's nearest neighbour is in its own set -> 100 %.
  assert mp.nna_chamfer(real + 50.0, real) == pytest.approx(1.0)
  # Fakes that copy the reference clouds (up to point order, a tiny shift): each
  # cloud's nearest neighbour is its twin in the other set -> 0 %.
  twins = real[:, ::-1] + 1e-6
  assert mp.nna_emd(twins, real) == pytest.approx(0.0)
  assert mp.nna_chamfer(twins, real) == pytest.approx(0.0)
  # Independent samples of the same distribution: near 50 %.
  a, b = rng.normal(size=(2, 60, 8, 2))
  assert 0.3 < mp.nna_chamfer(a, b) < 0.7


def test_padding_is_ignored():
  rng = np.random.default_rng(1)
  fake, real = rng.normal(size=(6, 5, 2)), rng.normal(size=(6, 5, 2))
  fmask = np.arange(5)[None] < rng.integers(2, 6, 6)[:, None]
  rmask = np.arange(5)[None] < rng.integers(2, 6, 6)[:, None]
  base = mp.nna_emd(fake, real, fake_mask=fmask, real_mask=rmask)
  fake2, real2 = fake.copy(), real.copy()
  fake2[~fmask], real2[~rmask] = 1e3, -1e3
  assert mp.nna_emd(fake2, real2, fake_mask=fmask, real_mask=rmask) == base
  d = mp.distance_matrix(fake, fmask, "emd")
  assert d[0, 1] == pytest.approx(mp.emd(fake[0][fmask[0]], fake[1][fmask[1]]), rel=1e-5)


def loop_matrix(x, mask, fn):
  """The old path: a Python loop of float64 per-pair distances over the real points."""
  clouds = [c[m] for c, m in zip(x, mask)]
  out = np.zeros((len(x), len(x)))
  for i in range(len(x)):
    for j in range(i + 1, len(x)):
      out[i, j] = out[j, i] = fn(clouds[i], clouds[j])
  return out


@pytest.mark.parametrize("distance", ["chamfer", "emd"])
def test_batched_matrix_and_nna_equal_the_loop(distance):
  rng = np.random.default_rng(3)
  # Sizes 3-6 of 6: equal-size pairs (assignment) and unequal ones (network simplex);
  # masks with holes, not only trailing padding.
  x = rng.normal(size=(14, 6, 2))
  mask = rng.random((14, 6)) < 0.7
  mask[:, 0] = True
  fn = mp.chamfer if distance == "chamfer" else mp.emd
  ref = loop_matrix(x, mask, fn)
  np.testing.assert_allclose(mp.distance_matrix(x, mask, distance), ref, rtol=1e-5, atol=1e-6)
  labels = np.arange(14) < 7
  want = mp.one_nn_accuracy(ref, labels)
  assert mp.nna(x[:7], x[7:], fake_mask=mask[:7], real_mask=mask[7:],
                distance=distance) == pytest.approx(want)


def test_emd_pruned_nearest_neighbours_equal_full_argmin():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(30, 5, 2)) + rng.normal(size=(30, 1, 2)) * 2
  mask = np.arange(5)[None] < rng.integers(3, 6, 30)[:, None]
  xp, mp_ = mp.padded(x, mask, "x")
  full = mp.emd_matrix(xp, mp_)
  np.fill_diagonal(full, np.inf)
  # The sliced bound is a lower bound, and tight for clouds that differ by a shift.
  assert np.all(mp.lower_bounds(xp, mp_) <= full * (1 + 1e-5) + 1e-6)
  shifted = mp.lower_bounds(np.stack([xp[0], xp[0] + [0.5, 0.0]]), np.stack([mp_[0]] * 2))
  assert shifted[0, 1] == pytest.approx(0.5, rel=1e-4)
  np.testing.assert_array_equal(mp.emd_nearest(xp, mp_), np.argmin(full, 1))


def test_bad_input():
  x = np.zeros((3, 4, 2))
  mask = np.ones((3, 4), bool)
  mask[2] = False
  with pytest.raises(ValueError, match="empty point cloud"):
    mp.nna_chamfer(x, x, fake_mask=mask, real_mask=None)
  with pytest.raises(ValueError, match="dimension"):
    mp.nna_emd(x, np.zeros((3, 4, 3)))
  with pytest.raises(ValueError, match="\\[n, N, D\\]"):
    mp.nna_emd(np.zeros((3, 4)), x)
  with pytest.raises(KeyError, match="Unknown cloud distance"):
    mp.nna(x, x, distance="hausdorff")


def test_method_exposes_metrics():
  assert set(WFM.metrics(None)) == {"nna_chamfer", "nna_emd"}

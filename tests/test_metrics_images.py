"""Image metrics: Fréchet distance and KID against closed forms, the feature hook, accuracy."""

import numpy as np
import pytest
from scipy import linalg

from flowzoo import metrics_images as mi


def _cubic(a, b):
  return (a @ b.T / a.shape[1] + 1.0) ** 3


def _rotation(d, seed):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
  return q


# ------------------------------------------------------------------ Fréchet


def test_frechet_of_identical_sets_is_zero_even_when_singular():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5))
  assert mi.frechet_distance(x, x) < 1e-6
  # Fewer rows than features: a rank-3 covariance in 20-D (the FIDc case).
  few = rng.normal(size=(4, 20)) * np.arange(1, 21)
  assert mi.frechet_distance(few, few) < 1e-6


def test_frechet_from_moments_closed_form_for_commuting_covariances():
  mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
  a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
  # Commuting covariances share eigenvectors: FD = ||mu1 - mu2||^2 + sum (sqrt a - sqrt b)^2.
  want = 5.0 + (1 - 3) ** 2 + (2 - 1) ** 2 + 0.0
  assert mi.frechet_from_moments(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, abs=1e-10)
  q = _rotation(3, 1)
  got = mi.frechet_from_moments(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
  assert got == pytest.approx(want, abs=1e-10)
  # 1-D: (m1 - m2)^2 + (sd1 - sd2)^2, the squared W2 distance of two normals.
  assert mi.frechet_from_moments([1.0], [[4.0]], [-1.0], [[0.25]]) == pytest.approx(4 + 1.5 ** 2)


def test_frechet_from_moments_matches_sqrtm_for_general_covariances():
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
  s1, s2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
  mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
  cross = linalg.sqrtm(s1 @ s2).real
  want = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * cross)
  assert mi.frechet_from_moments(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9)
  # Symmetric in its arguments although the computation is not.
  assert mi.frechet_from_moments(mu2, s2, mu1, s1) == pytest.approx(want, rel=1e-9)


def test_sample_frechet_approaches_the_population_value():
  rng = np.random.default_rng(3)
  a = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.7]])
  mu = np.array([0.5, 0.0, -0.3])
  x = rng.normal(size=(20000, 3))
  y = rng.normal(size=(20000, 3)) @ a.T + mu
  want = mi.frechet_from_moments(np.zeros(3), np.eye(3), mu, a @ a.T)
  assert want > 0.5  # not a trivially small target
  assert mi.frechet_distance(x, y) == pytest.approx(want, abs=0.05)


def test_frechet_bad_input():
  x = np.zeros((5, 3))
  with pytest.raises(ValueError, match="2-D"):
    mi.frechet_distance(np.zeros(5), x)
  with pytest.raises(ValueError, match="non-finite"):
    mi.frechet_distance(np.where(np.eye(5, 3) > 0, np.nan, 0.0), x)
  with pytest.raises(ValueError, match="at least 2 rows"):
    mi.frechet_distance(np.zeros((1, 3)), x)
  with pytest.raises(ValueError, match="same number of features"):
    mi.frechet_distance(np.zeros((5, 2)), x)
  with pytest.raises(ValueError, match="not symmetric"):
    mi.frechet_from_moments(np.zeros(2), [[1.0, 0.5], [0.0, 1.0]], np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match="positive semi-definite"):
    mi.frechet_from_moments(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -1.0]))
  with pytest.raises(ValueError, match=r"\[F, F\]"):
    mi.frechet_from_moments(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


# ------------------------------------------------------------------ KID


def test_kid_equals_the_u_statistic_written_out():
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(4, 2)), rng.normal(1.0, 1.0, size=(4, 2))
  k = lambda u, v: (u @ v / 2 + 1) ** 3
  within = lambda s: sum(k(s[i], s[j]) for i in range(4) for j in range(4) if i != j) / 12
  between = sum(k(u, v) for u in x for v in y) / 16
  want = within(x) + within(y) - 2 * between
  # Subsets of all 4 points are the full sets in another order: every draw is `want`.
  mean, std = mi.kid(x, y, subset_size=100, num_subsets=3)
  assert mean == pytest.approx(want, rel=1e-12)
  assert std == pytest.approx(0.0, abs=1e-9)


def test_kid_is_unbiased_where_the_v_statistic_is_not():
  # Same distribution, 10 points per set: E[KID] = 0, while the V-statistic's
  # diagonal adds (E k(x, x) - E k(x, x')) (1/n + 1/m) = (28 - 4) * 0.2 = 4.8.
  rng = np.random.default_rng(5)
  u, v = [], []
  for r in range(400):
    x, y = rng.normal(size=(10, 1)), rng.normal(size=(10, 1))
    u.append(mi.kid(x, y, subset_size=10, num_subsets=1, seed=r)[0])
    v.append(_cubic(x, x).mean() + _cubic(y, y).mean() - 2 * _cubic(x, y).mean())
  se_u, se_v = np.std(u) / 20, np.std(v) / 20
  assert abs(np.mean(u)) < 4 * se_u
  assert np.mean(v) == pytest.approx(4.8, abs=4 * se_v)
  assert np.mean(v) > 10 * se_v


def test_kid_averages_to_the_population_mmd():
  # 1-D cubic kernel: (xy + 1)^3 = 1 + 3xy + 3x^2y^2 + x^3y^3, so
  # MMD^2 = 3 (m1 - n1)^2 + 3 (m2 - n2)^2 + (m3 - n3)^2 with raw moments m_k, n_k.
  # N(0, 1): 0, 1, 0. N(0.5, 1): 0.5, 1.25, 0.5^3 + 3 * 0.5 = 1.625.
  want = 3 * 0.25 + 3 * 0.25 ** 2 + 1.625 ** 2
  rng = np.random.default_rng(6)
  est = [mi.kid(rng.normal(size=(50, 1)), rng.normal(0.5, 1.0, size=(50, 1)),
                subset_size=50, num_subsets=1, seed=r)[0] for r in range(300)]
  se = np.std(est) / np.sqrt(len(est))
  assert se < 0.1 * want  # the check below can tell a wrong kernel scale apart
  assert np.mean(est) == pytest.approx(want, abs=4 * se)


def test_kid_bad_input():
  with pytest.raises(ValueError, match="subset_size >= 2"):
    mi.kid(np.zeros((5, 2)), np.zeros((5, 2)), subset_size=1)
  with pytest.raises(ValueError, match="at least 2 rows"):
    mi.kid(np.zeros((1, 2)), np.zeros((5, 2)))


# ------------------------------------------------------------------ feature_metrics / hook


def _sets(seed=7):
  rng = np.random.default_rng(seed)
  scale = np.array([1000.0, 1.0, 0.01])  # an "area", an intensity, a ratio
  real = {"a": rng.normal(size=(30, 3)) * scale, "b": (rng.normal(size=(40, 3)) + 1) * scale}
  gen = {"a": (rng.normal(size=(25, 3)) + 0.3) * scale, "b": (rng.normal(size=(35, 3)) + 1) * scale}
  return real, gen


def test_feature_metrics_standardise_with_the_real_cells():
  real, gen = _sets()
  out = mi.feature_metrics(real, gen, kid_subset_size=20, kid_num_subsets=5)
  pooled = np.concatenate([real["a"], real["b"]])
  z = lambda x: (x - pooled.mean(0)) / pooled.std(0)
  assert out["fid_per_condition"]["a"] == pytest.approx(mi.frechet_distance(z(gen["a"]), z(real["a"])))
  assert out["fid_c"] == pytest.approx(np.mean(list(out["fid_per_condition"].values())))
  gen_all = np.concatenate([gen["a"], gen["b"]])
  assert out["fid_o"] == pytest.approx(mi.frechet_distance(z(gen_all), z(pooled)))
  kid_b = mi.kid(z(gen["b"]), z(real["b"]), subset_size=20, num_subsets=5)[0]
  assert out["kid_per_condition"]["b"] == pytest.approx(kid_b)
  assert out["kid_c"] == pytest.approx(np.mean(list(out["kid_per_condition"].values())))
  assert out["num_features"] == 3
  # Standardised, the "area" no longer dominates: rescaling it changes nothing.
  scaled = lambda s: {c: x * [1e-3, 1, 1] for c, x in s.items()}
  again = mi.feature_metrics(scaled(real), scaled(gen), kid_subset_size=20, kid_num_subsets=5)
  assert again["fid_o"] == pytest.approx(out["fid_o"], rel=1e-9)
  raw = mi.feature_metrics(real, gen, standardize=False, kid_subset_size=20, kid_num_subsets=5)
  assert raw["fid_o"] > 100 * out["fid_o"]


def test_feature_metrics_bad_conditions():
  real, gen = _sets()
  with pytest.raises(ValueError, match=r"missing generated: \['b'\]"):
    mi.feature_metrics(real, {"a": gen["a"]})
  with pytest.raises(ValueError, match=r"generated\['a'\] needs at least 2 rows"):
    mi.feature_metrics(real, {"a": gen["a"][:1], "b": gen["b"]})
  with pytest.raises(ValueError, match="feature dimensions differ"):
    mi.feature_metrics(real, {"a": gen["a"][:, :2], "b": gen["b"]})


def test_image_metrics_uses_the_feature_hook():
  rng = np.random.default_rng(8)
  real = {"a": rng.normal(size=(12, 4, 4, 2)), "b": rng.normal(size=(9, 4, 4, 2))}
  gen = {"a": rng.normal(size=(10, 4, 4, 2)) + 0.5, "b": rng.normal(size=(11, 4, 4, 2))}
  encode = lambda crops: crops.reshape(len(crops), -1)[:, :3]
  kw = dict(kid_subset_size=8, kid_num_subsets=4, seed=1)
  got = mi.image_metrics(real, gen, features=encode, **kw)
  want = mi.feature_metrics({c: encode(x) for c, x in real.items()},
                            {c: encode(x) for c, x in gen.items()}, **kw)
  assert got == want  # the same features through the same code: bit-identical
  same = mi.image_metrics(real, real, features=encode, **kw)
  assert same["fid_o"] < 1e-6 and same["fid_c"] < 1e-6


def test_image_metrics_with_morphology_features():
  rng = np.random.default_rng(9)
  yy, xx = np.mgrid[:24, :24]
  def crops(n, radius):
    x = -1 + 0.05 * rng.random((n, 24, 24, 3))
    for i, r in enumerate(rng.uniform(radius - 1, radius + 1, n)):
      x[i, (yy - 11.5) ** 2 + (xx - 11.5) ** 2 <= r * r, :] += 1.2
    return x
  real = {"small": crops(8, 4), "large": crops(8, 8)}
  gen = {"small": crops(8, 4), "large": crops(8, 4)}  # the "large" condition is wrong
  out = mi.image_metrics(real, gen, kid_subset_size=8, kid_num_subsets=3)
  assert out["num_features"] == len(mi.morphology.FEATURE_NAMES)
  assert out["fid_per_condition"]["large"] > out["fid_per_condition"]["small"]
  assert np.isfinite([out[k] for k in ("fid_o", "fid_c", "kid_o", "kid_c")]).all()


def test_feature_hook_errors():
  crops = np.zeros((3, 4, 4, 1))
  with pytest.raises(ValueError, match="unknown features 'inception'"):
    mi.compute_features(crops, "inception")
  with pytest.raises(ValueError, match=r"to \[N, F>=1\]"):
    mi.compute_features(crops, lambda c: np.zeros((2, 5)))
  with pytest.raises(ValueError, match="returned NaN"):
    mi.compute_features(crops, lambda c: np.full((3, 5), np.nan))
  with pytest.raises(ValueError, match=r"\[N >= 1, H, W, C\]"):
    mi.compute_features(np.zeros((3, 4, 4)), lambda c: c)
  with pytest.raises(ValueError, match="one \\[H, W, C\\]"):
    mi.image_metrics({"a": crops}, {"a": np.zeros((3, 5, 5, 1))}, features=lambda c: c[:, 0, 0])


# ------------------------------------------------------------------ condition accuracy


def _populations(shift, seed=10):
  rng = np.random.default_rng(seed)
  def draw(n):
    labels = np.repeat(["ctrl", "drug"], n)
    x = rng.normal(size=(2 * n, 4))
    x[n:] += shift
    return x, labels
  return draw(100), draw(100), draw(100)


def test_condition_accuracy_separates_different_populations():
  (tx, ty), (gx, gy), (rx, ry) = _populations(shift=5.0)
  out = mi.condition_accuracy(tx, ty, gx, gy, real_feats=rx, real_labels=ry)
  assert out["accuracy"] > 0.97 and out["real_accuracy"] > 0.97
  assert out["macro_f1"] > 0.97 and out["num_classes"] == 2
  # Generated crops with swapped labels are classified as the other condition.
  swapped = mi.condition_accuracy(tx, ty, gx, gy[::-1], real_feats=rx, real_labels=ry)
  assert swapped["accuracy"] < 0.03


def test_condition_accuracy_is_chance_for_identical_populations():
  (tx, ty), (gx, gy), (rx, ry) = _populations(shift=0.0)
  out = mi.condition_accuracy(tx, ty, gx, gy, real_feats=rx, real_labels=ry)
  assert 0.35 < out["accuracy"] < 0.65  # 200 crops: chance 0.5 +- 3 sd


def test_one_fitted_classifier_scores_each_condition_as_a_fresh_fit_would():
  (tx, ty), (gx, gy), (rx, ry) = _populations(shift=1.0)
  clf = mi.condition_classifier(tx, ty)
  for name in ("ctrl", "drug"):  # per condition, as flowzoo.image_eval.score uses it
    rows = gy == name
    once = mi.classifier_scores(clf, gx[rows], gy[rows])
    fresh = mi.condition_accuracy(tx, ty, gx[rows], gy[rows], real_feats=rx, real_labels=ry)
    assert once["accuracy"] == fresh["accuracy"]
    assert 0.5 < once["accuracy"] < 1.0  # shift 1: better than chance, not separable
  with pytest.raises(ValueError, match="classifier was trained on 4"):
    mi.classifier_scores(clf, gx[:, :3], gy)
  with pytest.raises(ValueError, match="absent from training: \\['x'\\]"):
    mi.classifier_scores(clf, gx[:2], np.array(["x", "ctrl"]))


def test_condition_accuracy_bad_input():
  (tx, ty), (gx, gy), (rx, ry) = _populations(shift=1.0)
  with pytest.raises(ValueError, match="absent from training: \\['other'\\]"):
    mi.condition_accuracy(tx, ty, gx, np.where(gy == "drug", "other", gy),
                          real_feats=rx, real_labels=ry)
  with pytest.raises(ValueError, match="at least 2 training classes"):
    mi.condition_accuracy(tx, np.full(len(tx), "ctrl"), gx, gy, real_feats=rx, real_labels=ry)
  with pytest.raises(ValueError, match="generated_labels must have shape"):
    mi.condition_accuracy(tx, ty, gx, gy[:5], real_feats=rx, real_labels=ry)
  with pytest.raises(ValueError, match="feature dimensions differ"):
    mi.condition_accuracy(tx, ty, gx[:, :2], gy, real_feats=rx, real_labels=ry)

"""Morphology features of crops: known shapes, skimage references, empty crops."""

import numpy as np
import pytest
from skimage import filters, measure

from flowzoo import morphology

H = 48
NAMES = morphology.FEATURE_NAMES


def _blank(n=1, c=3, noise=0.01, seed=0):
  """`[n, H, H, c]` background at -1 with a little noise (so Otsu has a spread)."""
  rng = np.random.default_rng(seed)
  return -1.0 + noise * rng.random((n, H, H, c))


def _ellipse(a, b, cy=(H - 1) / 2, cx=(H - 1) / 2):
  yy, xx = np.mgrid[:H, :H]
  return ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 <= 1


def _get(f, name):
  return f[:, NAMES.index(name)]


def test_disc_gives_its_area_round_shape_and_intensity():
  r = 9.0
  x = _blank()
  x[0, _ellipse(r, r), 0] = 1.0
  x[0, _ellipse(16, 16), 1] = 0.5  # tubulin fills a larger cell around the nucleus
  f = morphology.features(x)
  assert _get(f, "nucleus_area")[0] == pytest.approx(np.pi * r * r, rel=0.03)
  assert _get(f, "nucleus_eccentricity")[0] < 0.1
  assert _get(f, "nucleus_perimeter")[0] == pytest.approx(2 * np.pi * r, rel=0.1)
  assert _get(f, "nucleus_major_axis")[0] == pytest.approx(2 * r, rel=0.05)
  assert _get(f, "nucleus_minor_axis")[0] == pytest.approx(2 * r, rel=0.05)
  assert _get(f, "nucleus_solidity")[0] > 0.9
  # The cell is the mean-channel Otsu region: the tubulin disc (nucleus inside it).
  assert _get(f, "cell_area")[0] == pytest.approx(np.pi * 16 ** 2, rel=0.03)
  assert _get(f, "nucleus_cell_area_ratio")[0] == pytest.approx((r / 16) ** 2, rel=0.06)
  assert _get(f, "dna_nucleus_mean")[0] == pytest.approx(1.0, abs=1e-12)
  assert _get(f, "tubulin_nucleus_mean")[0] == pytest.approx(0.5, abs=1e-12)
  assert _get(f, "tubulin_cell_q50")[0] == pytest.approx(0.5, abs=1e-12)
  assert _get(f, "nucleus_objects")[0] == 1


def test_ellipse_is_eccentric():
  x = _blank()
  x[0, _ellipse(14, 6), 0] = 1.0
  f = morphology.features(x)
  assert _get(f, "nucleus_eccentricity")[0] == pytest.approx(np.sqrt(1 - (6 / 14) ** 2), abs=0.03)
  assert _get(f, "nucleus_eccentricity")[0] > 0.5
  assert _get(f, "nucleus_major_axis")[0] == pytest.approx(28, rel=0.05)


def test_nucleus_is_the_component_nearest_the_centre():
  x = _blank()
  x[0, _ellipse(5, 5), 0] = 1.0                  # small, at the centre
  x[0, _ellipse(8, 8, cy=10, cx=10), 0] = 1.0    # larger neighbour in a corner
  f = morphology.features(x)
  assert _get(f, "nucleus_area")[0] == pytest.approx(np.pi * 25, rel=0.06)
  assert _get(f, "nucleus_objects")[0] == 2


def test_empty_and_constant_crops_are_finite_with_zero_shapes():
  x = np.concatenate([np.full((1, H, H, 3), -1.0), np.zeros((1, H, H, 3)), _blank()])
  f = morphology.features(x)
  assert f.shape == (3, len(NAMES)) and np.all(np.isfinite(f))
  for name in ("nucleus_area", "cell_area", "nucleus_perimeter", "nucleus_cell_area_ratio",
               "dna_cell_mean", "nucleus_objects"):
    assert np.all(_get(f, name)[:2] == 0), name
  # A constant crop has no texture: contrast 0, energy 1.
  assert np.all(_get(f, "dna_glcm_contrast")[:2] == 0)
  assert np.all(_get(f, "dna_glcm_energy")[:2] == 1)


def test_names_match_columns_for_any_channel_count():
  assert len(NAMES) == len(set(NAMES)) == morphology.features(_blank()).shape[1]
  one = morphology.features(_blank(c=1))
  assert one.shape == (1, len(morphology.feature_names(1)))
  assert morphology.feature_names(1)[-1] == "ch0_glcm_correlation"


def test_vectorised_otsu_matches_skimage():
  rng = np.random.default_rng(1)
  imgs = np.stack([rng.normal(size=(20, 20)), rng.exponential(size=(20, 20)),
                   np.concatenate([rng.normal(0, 1, 200), rng.normal(6, 1, 200)]).reshape(20, 20),
                   np.round(rng.random((20, 20)) * 4)])
  got = morphology.otsu_thresholds(imgs)
  want = np.array([filters.threshold_otsu(i) for i in imgs])
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_shapes_match_regionprops():
  masks = np.stack([_ellipse(10, 4, cy=20, cx=25), _ellipse(3, 12), np.zeros((H, H), bool)])
  masks[1, 20:30, 30:33] = True  # a tail: not convex, not an ellipse
  masks[2, 5, 5] = True  # one pixel: zero inertia, eccentricity 0
  got = morphology.shapes(masks)
  for m, g in zip(masks, got):
    p = measure.regionprops(m.astype(np.uint8))[0]
    want = [p.area, p.perimeter, p.eccentricity, p.solidity, p.axis_major_length,
            p.axis_minor_length]
    np.testing.assert_allclose(g, want, rtol=1e-9, atol=1e-9)


def test_masked_statistics_match_numpy():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(3, 50, 2))
  mask = rng.random((3, 50)) > 0.5
  mask[2] = False
  mask[1, :] = False
  mask[1, 7] = True  # a single pixel
  got = morphology._masked_stats(x, mask)  # pylint: disable=protected-access
  for i in range(2):
    v = x[i][mask[i]]
    want = np.stack([v.mean(0), v.std(0), *np.quantile(v, [0.1, 0.5, 0.9], axis=0)], -1)
    np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-12)
  assert np.all(got[2] == 0)


def test_bad_input_raises_naming_the_problem():
  with pytest.raises(ValueError, match=r"\[N >= 1, H, W, C\]"):
    morphology.features(np.zeros((H, H, 3)))
  with pytest.raises(ValueError, match="NaN"):
    x = _blank()
    x[0, 0, 0, 0] = np.nan
    morphology.features(x)
  with pytest.raises(ValueError, match="at least 3x3"):
    morphology.features(np.zeros((1, 2, 8, 3)))
  with pytest.raises(ValueError, match="value_range"):
    morphology.features(_blank(), value_range=(1.0, -1.0))

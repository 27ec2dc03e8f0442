"""Rotated-letter populations (MixFlow §5.1): shapes, descriptors, splits, geometry."""

import numpy as np
import pytest
from PIL import Image
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from flowzoo.data import letters as letters_lib
from flowzoo.registry import DATASETS

R = 20


@pytest.fixture(scope="module")
def pops():
  return letters_lib.letters()


def w2(a, b, n=1000):
  """Exact W2 between the first n points of two clouds (equal weights)."""
  a, b = a[:n], b[:n]
  cost = cdist(a, b, "sqeuclidean")
  rows, cols = linear_sum_assignment(cost)
  return float(np.sqrt(cost[rows, cols].mean()))


def by_name(p, name):
  return p.samples[list(p.names).index(name)]


def test_default_shapes_and_names(pops):
  assert len(pops.names) == 6 * (R // 2) + R // 2
  assert pops.event_shape == (2,)
  assert all(s.shape == (4 * 250, 2) for s in pops.samples)
  assert pops.descriptors.shape == (70, 7)
  assert pops.names[:3] == ["S_r00", "S_r01", "S_r02"]
  assert "H_r02" in pops.names and "H_r03" not in pops.names
  assert pops.info and "\n" not in pops.info


def test_descriptor_is_one_hot_letter_and_normalised_rotation(pops):
  one_hot, rot = pops.descriptors[:, :6], pops.descriptors[:, 6]
  np.testing.assert_array_equal(one_hot.sum(1), 1.0)
  assert set(np.unique(one_hot)) == {0.0, 1.0}
  letters = ["SHLTAE"[i] for i in one_hot.argmax(1)]
  assert letters == list(pops.covariates["letter"])
  np.testing.assert_allclose(rot, np.asarray(pops.covariates["rotation"]) / R)
  for name, letter, r in zip(pops.names, pops.covariates["letter"], pops.covariates["rotation"]):
    assert name == f"{letter}_r{r:02d}"
  assert rot.min() == 0.0 and rot.max() == pytest.approx((R - 1) / R)


@pytest.mark.parametrize("val_letter", ["S", "H"])
def test_splits_follow_the_paper(val_letter):
  p = letters_lib.letters(val_letter=val_letter, copies=1, points_per_copy=8)
  train = {n for n, s in zip(p.names, p.splits) if s == "train"}
  heldout = {n for n, s in zip(p.names, p.splits) if s == "heldout"}
  assert train == {f"{c}_r{r:02d}" for c in "SHLTAE" for r in range(0, R, 2)}
  assert heldout == {f"{val_letter}_r{r:02d}" for r in range(1, R, 2)}
  assert set(p.splits) == {"train", "heldout"}  # no validation split
  assert len(p.names) == len(train) + len(heldout)


def test_several_validation_letters_keep_the_training_set():
  # Tuning letters (not S or H) see the same training conditions and data.
  one = letters_lib.letters(val_letter="S", copies=1, points_per_copy=8)
  several = letters_lib.letters(val_letter="LTAE", copies=1, points_per_copy=8)
  held = [n for n, s in zip(several.names, several.splits) if s == "heldout"]
  assert sorted(held) == sorted(f"{c}_r{r:02d}" for c in "LTAE" for r in range(1, R, 2))
  train = lambda p: {n: x for n, x, s in zip(p.names, p.samples, p.splits) if s == "train"}
  a, b = train(one), train(several)
  assert a.keys() == b.keys()
  for n in a:
    np.testing.assert_array_equal(a[n], b[n])


def test_rotation_matches_rotated_population(pops):
  # "L" has no rotational symmetry: undoing the rotation must recover the
  # rotation-0 population (up to sampling noise), and not undoing it must not.
  base = by_name(pops, "L_r00")
  noise = w2(base, letters_lib.letters(letters="L", val_letter="L", seed=1).samples[0])
  for r in (2, 6, 10, 14):
    angle = 2 * np.pi * r / R
    pop = by_name(pops, f"L_r{r:02d}")
    undone = w2(letters_lib.rotate(pop, -angle), base)
    assert undone < 2 * noise, (r, undone, noise)
    if r != R // 2:  # +pi and -pi coincide
      wrong_way = w2(letters_lib.rotate(pop, angle), base)
      assert wrong_way > 5 * noise, (r, wrong_way, noise)
    assert w2(pop, base) > 5 * noise
    # Rotation about the centroid keeps the mean at the origin (atol: ~3.5
    # standard errors of a 1000-point mean; the letter's std is <= 1.9).
    np.testing.assert_allclose(pop.mean(0), 0.0, atol=0.2)


def test_population_is_the_rotated_draw_of_its_seed(pops):
  glyph = letters_lib.render_glyph("T", 64)
  points = letters_lib.sample_glyph(glyph, 1000, letters_lib.condition_rng(0, "T", 6))
  np.testing.assert_allclose(by_name(pops, "T_r06"),
                             letters_lib.rotate(points, 2 * np.pi * 6 / R), atol=1e-5)


def test_points_lie_on_the_silhouette(pops):
  # Map unrotated points back to pixels: every one is on a foreground pixel.
  glyph = letters_lib.render_glyph("E", 64)
  pts = by_name(pops, "E_r00")
  cols = np.floor(pts[:, 0] * glyph.scale + glyph.centre[0]).astype(int)
  rows = np.floor(-pts[:, 1] * glyph.scale + glyph.centre[1]).astype(int)
  assert glyph.mask[rows, cols].mean() > 0.999
  # Uniform on the area: each foreground pixel gets ~n / area points.
  counts = np.bincount(rows * 64 + cols, minlength=64 * 64)[glyph.mask.ravel()]
  assert counts.mean() == pytest.approx(1000 / glyph.mask.sum(), rel=1e-3)
  assert counts.std() < 2 * np.sqrt(counts.mean())  # Poisson-like, no empty strokes


def test_rotation_direction_matches_image_rotation(pops):
  # Independent check against Pillow: rotating the raster counter-clockwise
  # (as displayed) about the centroid covers the rotated points.
  glyph = letters_lib.render_glyph("L", 64)
  for r in (3, 5, 15):
    deg = 360.0 * r / R
    image = Image.fromarray(glyph.mask.astype(np.uint8) * 255)
    rotated = np.asarray(image.rotate(deg, resample=Image.BILINEAR, center=glyph.centre)) >= 64
    pts = letters_lib.rotate(letters_lib.sample_glyph(glyph, 2000, np.random.default_rng(r)),
                             np.deg2rad(deg))
    cols = np.clip(np.floor(pts[:, 0] * glyph.scale + glyph.centre[0]).astype(int), 0, 63)
    rows = np.clip(np.floor(-pts[:, 1] * glyph.scale + glyph.centre[1]).astype(int), 0, 63)
    assert rotated[rows, cols].mean() > 0.95, r


@pytest.mark.parametrize("char", list("SHLTAE"))
def test_longer_side_spans_twice_the_extent(char):
  # Meta Flow Matching's scale: the longer bounding-box side maps to [-3, 3].
  pts = letters_lib.letters(letters=char, val_letter=char).samples[0]
  glyph = letters_lib.render_glyph(char, 64)
  assert np.ptp(pts, axis=0).max() == pytest.approx(2 * letters_lib.EXTENT, abs=2 / glyph.scale)
  half = letters_lib.letters(letters=char, val_letter=char, extent=np.float32(1.5)).samples[0]
  np.testing.assert_allclose(half, pts / 2, rtol=1e-6, atol=1e-6)  # same draw, scaled


def test_font_units_keep_the_earlier_scale():
  # extent=None: one unit is half the font size (round(0.8 * 64) / 2 = 25.5 px), so
  # the capitals are ~1.45 units tall, as every result before 2026-11-24.
  glyph = letters_lib.render_glyph("H", 64, None)
  assert glyph.scale == pytest.approx(25.5)
  pts = letters_lib.letters(letters="H", val_letter="H", extent=None).samples[0]
  assert np.ptp(pts[:, 1]) == pytest.approx(1.45, abs=0.05)
  scaled = letters_lib.letters(letters="H", val_letter="H").samples[0]
  np.testing.assert_allclose(scaled, pts * 25.5 / letters_lib.render_glyph("H", 64).scale,
                             rtol=1e-5, atol=1e-5)


def test_different_letters_differ(pops):
  # Sampling noise of W2 between two 1000-point draws of "S" is ~0.2 (extent 3).
  noise = w2(by_name(pops, "S_r00"), letters_lib.letters(seed=3).samples[0])
  assert w2(by_name(pops, "S_r00"), by_name(pops, "H_r00")) > 3 * noise
  assert w2(by_name(pops, "L_r00"), by_name(pops, "T_r00")) > 3 * noise


def test_deterministic_in_seed():
  a = letters_lib.letters(letters="SH", num_rotations=4, copies=1, points_per_copy=32, seed=7)
  b = letters_lib.letters(letters=["S", "H"], num_rotations=4, copies=1, points_per_copy=32, seed=7)
  c = letters_lib.letters(letters="SH", num_rotations=4, copies=1, points_per_copy=32, seed=8)
  assert a.names == b.names
  for x, y, z in zip(a.samples, b.samples, c.samples):
    np.testing.assert_array_equal(x, y)
    assert not np.allclose(x, z)
  # A condition does not depend on which other letters are in the set.
  d = letters_lib.letters(letters="HS", num_rotations=4, copies=1, points_per_copy=32, seed=7)
  np.testing.assert_array_equal(by_name(a, "H_r02"), by_name(d, "H_r02"))


def test_built_from_registry_with_small_config():
  p = DATASETS.build("letters", dict(letters="SH", num_rotations=4, val_letter="H",
                                     copies=2, points_per_copy=16))
  assert p.names == ["S_r00", "S_r02", "H_r00", "H_r01", "H_r02", "H_r03"]
  assert p.splits == ["train", "train", "train", "heldout", "train", "heldout"]
  assert all(s.shape == (32, 2) for s in p.samples)
  np.testing.assert_allclose(p.descriptors[3], [0, 1, 0.25])


@pytest.mark.parametrize("kwargs, match", [
    (dict(val_letter="Z"),
     r"val_letter='Z' is not one of the letters \['S', 'H', 'L', 'T', 'A', 'E'\]"),
    (dict(val_letter="LZ"),
     r"val_letter='LZ' is not one of the letters"),
    (dict(val_letter="LL"), r"val_letter: duplicate letter\(s\) \['L'\]"),
    (dict(val_letter=3), "val_letter: expected a string or sequence of letters, got 3"),
    (dict(num_rotations=7), "num_rotations must be even"),
    (dict(num_rotations=0), "num_rotations must be an integer >= 2"),
    (dict(letters="SHS"), r"duplicate letter\(s\) \['S'\]"),
    (dict(letters=["S", "HA"]), "one non-space character"),
    (dict(letters="S H"), "one non-space character"),
    (dict(letters=""), "at least one letter"),
    (dict(copies=0), "copies must be an integer >= 1"),
    (dict(points_per_copy=2.5), "points_per_copy must be an integer >= 1"),
    (dict(resolution=8), "resolution must be an integer >= 16"),
    (dict(extent=0.0), "extent must be a positive number or None, got 0.0"),
    (dict(extent="3"), "extent must be a positive number or None, got '3'"),
    (dict(extent=float("nan")), "extent must be a positive number or None"),
])
def test_bad_arguments_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    letters_lib.letters(**kwargs)


def test_unknown_dataset_argument_is_named():
  with pytest.raises((TypeError, ValueError, KeyError), match="rotations"):
    DATASETS.build("letters", dict(rotations=20))


def test_each_glyph_is_rendered_once():
  # What keeps the dataset cheap to rebuild (~0.1 s from a cold cache on 2
  # cores): every rotation and copy samples one cached mask per letter.
  alphabet = "SHLTAE"
  letters_lib.render_glyph.cache_clear()
  letters_lib.letters(letters=alphabet)
  assert letters_lib.render_glyph.cache_info().misses == len(alphabet)
  letters_lib.letters(letters=alphabet, seed=1)
  info = letters_lib.render_glyph.cache_info()
  assert (info.misses, info.hits) == (len(alphabet), len(alphabet))

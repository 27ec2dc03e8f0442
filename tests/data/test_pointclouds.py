"""Point-cloud datasets: digits, MNIST IDX reader, OBJ reader and surface sampling."""

import gzip

import numpy as np
import pytest

from flowzoo.data import pointclouds as pc
from flowzoo.registry import DATASETS


@pytest.fixture(scope="module")
def digits():
  return DATASETS.build("digits_clouds", dict(digits="037", test_fraction=0.2))


def test_digits_conditions_splits_and_padding(digits):
  assert digits.names == ["0", "0/test", "3", "3/test", "7", "7/test"]
  assert digits.splits == ["train", "heldout"] * 3
  n, d = digits.event_shape
  assert d == 2 and n <= 64
  # Held-out conditions share the descriptor of their digit.
  np.testing.assert_array_equal(digits.descriptors[0], digits.descriptors[1])
  assert digits.descriptors.shape == (6, 3)
  for s, m in zip(digits.samples, digits.masks):
    sizes = m.sum(1)
    assert sizes.min() >= 1 and len(set(sizes.tolist())) > 3  # variable sizes
    np.testing.assert_array_equal(m, np.arange(n)[None] < sizes[:, None])  # real points first
    np.testing.assert_array_equal(s[~m], 0.0)
  # About 20 % of each digit held out, disjoint from training (no identical cloud).
  train, test = digits.samples[0], digits.samples[1]
  assert abs(len(test) / (len(train) + len(test)) - 0.2) < 0.02
  assert not any(np.array_equal(a, b) for a in test[:5] for b in train)


def test_digits_points_match_thresholded_pixels():
  from sklearn.datasets import load_digits
  images = load_digits().images[:3]
  clouds = pc.images_to_clouds(images, 6.0, jitter=False, seed=0)
  for im, c in zip(images, clouds):
    assert len(c) == int((im > 6.0).sum())
    rows, cols = 7 - c[:, 1].astype(int), c[:, 0].astype(int)
    assert np.all(im[rows, cols] > 6.0)
  jittered = pc.images_to_clouds(images, 6.0, jitter=True, seed=0)
  for c, j in zip(clouds, jittered):
    assert np.all(np.abs(j - c) <= 0.5) and np.abs(j - c).max() > 0


def test_standardised_globally(digits):
  pts = np.concatenate([s[m] for s, m in zip(digits.samples, digits.masks)])
  # Standardised over all 10 digits; this subset is still near 0 mean and unit pooled std.
  assert np.abs(pts.mean(0)).max() < 0.3 and 0.7 < pts.std() < 1.3


def test_empty_clouds_raise_clear_errors():
  with pytest.raises(ValueError, match="no pixel above threshold"):
    pc.digits_clouds(digits="1", threshold=16.0)
  with pytest.raises(ValueError, match="empty"):
    pc.pad_clouds([np.zeros((3, 2)), np.zeros((0, 2))])
  with pytest.raises(ValueError, match="unknown or no digit"):
    pc.digits_clouds(digits="")


def test_read_idx_roundtrip(tmp_path):
  data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  raw = bytes([0, 0, 0x08, 3]) + b"".join(int(s).to_bytes(4, "big") for s in data.shape)
  path = tmp_path / "x-idx3-ubyte.gz"
  path.write_bytes(gzip.compress(raw + data.tobytes()))
  np.testing.assert_array_equal(pc.read_idx(path), data)
  (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
  with pytest.raises(ValueError, match="magic"):
    pc.read_idx(tmp_path / "bad")
  path.write_bytes(gzip.compress(raw + data.tobytes()[:-1]))
  with pytest.raises(ValueError, match="header says"):
    pc.read_idx(path)


def test_mnist_clouds(shared_data):
  folder = shared_data / "mnist_test"
  images = pc.read_idx(folder / "t10k-images-idx3-ubyte.gz")
  labels = pc.read_idx(folder / "t10k-labels-idx1-ubyte.gz")
  assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
  pops = pc.mnist_clouds(path=str(folder), digits="4", max_per_digit=40, test_fraction=0.25)
  assert pops.names == ["4", "4/test"]
  sizes = np.concatenate(pops.masks).sum(1)
  first = images[labels == 4][:40]
  assert sorted(sizes.tolist()) == sorted(int((im > 127.5).sum()) for im in first)
  assert len(pops.samples[1]) == 10


def test_obj_reader_and_area_weighted_sampling(tmp_path):
  # Two triangles: the second has 4x the area of the first; quad face is fan-split.
  obj = tmp_path / "m.obj"
  obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 10 0 0\nv 12 0 0\nv 10 2 0\n"
                 "vt 0 0\nf 1/1 2/1 3/1\nf 4 5 6\n# comment\n")
  v, f = pc.read_obj(obj)
  assert v.shape == (6, 3) and f.tolist() == [[0, 1, 2], [3, 4, 5]]
  pts = pc.sample_surface(v, f, 20000, np.random.default_rng(0))
  big = pts[:, 0] >= 10
  assert abs(big.mean() - 0.8) < 0.01
  small = pts[~big]  # uniform on the unit triangle: mean (1/3, 1/3), inside x + y <= 1
  assert np.all(small[:, :2].sum(1) <= 1 + 1e-9) and np.all(small >= -1e-12)
  np.testing.assert_allclose(small[:, :2].mean(0), [1 / 3, 1 / 3], atol=0.01)
  quad = tmp_path / "q.obj"
  quad.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n")
  assert pc.read_obj(quad)[1].tolist() == [[0, 1, 2], [0, 2, 3]]
  bad = tmp_path / "bad.obj"
  bad.write_text("v 0 0 0\nf 1 2 3\n")
  with pytest.raises(ValueError, match="out of range"):
    pc.read_obj(bad)


def test_mesh_clouds(shared_data):
  meshes = shared_data / "meshes"
  pops = pc.mesh_clouds(paths=[str(meshes / "spot.obj")], clouds_per_mesh=8, min_points=20,
                        max_points=30, test_fraction=0.25)
  assert pops.names == ["spot", "spot/test"] and pops.event_shape == (30, 3)
  sizes = np.concatenate(pops.masks).sum(1)
  assert sizes.min() >= 20 and sizes.max() <= 30
  v, f = pc.read_obj(meshes / "spot.obj")
  assert len(v) > 1000 and f.shape[1] == 3

"""Gaussian datasets: toy families, validation errors, h5ad metacells, seqFISH niches."""

import importlib.util

import h5py
import numpy as np
import pytest

from flowzoo.data import gaussians, gaussians_cells
from flowzoo.geometry.bures import unpack_gaussians
from flowzoo.registry import DATASETS


def covs_of(pops):
  return [unpack_gaussians(s) for s in pops.samples]


def assert_spd(pops):
  for m, cov in covs_of(pops):
    np.testing.assert_allclose(cov, np.swapaxes(cov, 1, 2), atol=1e-6)
    assert np.linalg.eigvalsh(cov.astype(np.float64)).min() > 0


@pytest.mark.parametrize("name,kwargs,shape,names", [
    ("gaussian_spiral", dict(num=16), (3, 2), ["spiral"]),
    ("gaussian_spiral", dict(num=128), (3, 2), ["spiral"]),
    ("gaussian_moons", dict(num=64), (3, 2), ["upper", "lower"]),
    ("gaussian_moons", dict(num=64, conditional=False), (3, 2), ["moons"]),
    ("gaussian_sphere", dict(num=32), (4, 3), ["sphere"]),
])
def test_toy_families(name, kwargs, shape, names):
  pops = DATASETS.build(name, kwargs)
  assert pops.event_shape == shape and list(pops.names) == names
  assert sum(len(s) for s in pops.samples) == kwargs["num"]
  assert set(pops.splits) == {"train"}
  np.testing.assert_array_equal(pops.descriptors, np.eye(len(names)))
  assert_spd(pops)


def test_spiral_ellipses_follow_the_curve():
  pops = gaussians.gaussian_spiral(num=200, mean_noise=0.0)
  m, cov = covs_of(pops)[0]
  # Means are sorted along the curve: neighbouring differences approximate the tangent.
  tangent = np.diff(m, axis=0)
  tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
  major = np.linalg.eigh(cov.astype(np.float64))[1][:-1, :, -1]
  assert np.median(np.abs(np.sum(tangent * major, 1))) > 0.95
  assert np.abs(m).max() <= 2.0


def test_sphere_means_on_sphere_flat_along_normal():
  pops = gaussians.gaussian_sphere(num=16, normal=0.03)
  m, cov = covs_of(pops)[0]
  np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.einsum("ni,nij,nj->n", m, cov, m), 0.03 ** 2, rtol=1e-3)


def test_validation_errors_name_condition_and_sample():
  m = np.zeros((3, 2))
  cov = np.tile(np.eye(2), (3, 1, 1))
  bad = cov.copy()
  bad[1] = np.diag([1.0, -0.5])
  with pytest.raises(ValueError, match="condition 'b': covariance of sample 1 is not positive"):
    gaussians.gaussian_populations({"a": (m, cov), "b": (m, bad)})
  with pytest.raises(ValueError, match="condition 'a'.*means must be"):
    gaussians.gaussian_populations({"a": (np.zeros((3, 3)), cov)})
  with pytest.raises(ValueError, match="different dimensions"):
    gaussians.gaussian_populations({"a": (m, cov), "b": (np.zeros((2, 3)),
                                                         np.tile(np.eye(3), (2, 1, 1)))})
  with pytest.raises(ValueError, match="minor <= major"):
    gaussians.gaussian_spiral(major=0.1, minor=0.2)


def test_neighbourhood_gaussians_are_neighbour_moments():
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(20, 3))
  nb = gaussians_cells.knn(feats, 5)
  np.testing.assert_array_equal(nb[:, 0], np.arange(20))  # itself first
  m, cov = gaussians_cells.neighbourhood_gaussians(feats, nb, ridge=0.0)
  np.testing.assert_allclose(m[4], feats[nb[4]].mean(0))
  np.testing.assert_allclose(cov[4], np.cov(feats[nb[4]].T, bias=True), atol=1e-12)


def _write_legacy_h5ad(path, pcs, codes, cats):
  """The pbmc68k_reduced layout: compound obs/obsm tables, uns/<key>_categories."""
  n = len(pcs)
  with h5py.File(path, "w") as f:
    obs = np.zeros(n, dtype=[("index", "S8"), ("cell_type", "i1")])
    obs["index"] = [f"c{i}".encode() for i in range(n)]  # unique cell names
    obs["cell_type"] = codes
    f["obs"] = obs
    obsm = np.zeros(n, dtype=[("X_pca", "<f4", (pcs.shape[1],))])
    obsm["X_pca"] = pcs
    f["obsm"] = obsm
    f["uns/cell_type_categories"] = np.array(cats, dtype="S8")


def test_pbmc_metacells_from_h5ad_path(tmp_path):
  rng = np.random.default_rng(0)
  pcs = rng.normal(size=(60, 6)) * np.array([5, 4, 3, 2, 1, 1])
  codes = np.r_[np.zeros(30), np.ones(25), np.full(5, 2)].astype(np.int8)
  path = tmp_path / "toy.h5ad"
  _write_legacy_h5ad(path, pcs, codes, ["T", "B", "NK"])
  pops = gaussians_cells.pbmc_metacells(path=str(path), label_key="cell_type", dim=3, k=8)
  assert list(pops.names) == ["B", "T"]  # NK (5 cells < k) left out
  assert [len(s) for s in pops.samples] == [25, 30]
  assert pops.event_shape == (4, 3) and "NK (5 cells)" in pops.info
  assert_spd(pops)
  with pytest.raises(KeyError, match="no column 'louvain'"):
    gaussians_cells.pbmc_metacells(path=str(path), label_key="louvain")


def test_legacy_layout_numbers_are_the_stored_ones(tmp_path):
  # The anndata reader returns exactly what the old h5py reader returned:
  # obsm/X_pca (float32 on disk) as float64 and uns/<key>_categories[codes].
  rng = np.random.default_rng(2)
  pcs = rng.normal(size=(12, 3)).astype(np.float32)
  codes = np.array([0, 1, 2] * 4, np.int8)
  path = tmp_path / "legacy.h5ad"
  _write_legacy_h5ad(path, pcs, codes, ["T", "B", "NK"])
  x, labels, is_pca = gaussians_cells.read_h5ad_pcs_labels(path, "cell_type")
  assert is_pca and x.dtype == np.float64
  np.testing.assert_array_equal(x, pcs.astype(np.float64))
  np.testing.assert_array_equal(labels, np.array(["T", "B", "NK"])[codes])


def test_metacells_match_the_hand_built_gaussians(tmp_path):
  # pbmc_metacells on a file == neighbourhood Gaussians built from the arrays.
  rng = np.random.default_rng(3)
  pcs = (rng.normal(size=(40, 4)) * np.array([4, 3, 2, 1])).astype(np.float32)
  codes = np.r_[np.zeros(20), np.ones(20)].astype(np.int8)
  path = tmp_path / "toy.h5ad"
  _write_legacy_h5ad(path, pcs, codes, ["T", "B"])
  pops = gaussians_cells.pbmc_metacells(path=str(path), label_key="cell_type", dim=3, k=6,
                                        ridge=1e-3)
  feats = gaussians_cells.standardised_pcs(pcs.astype(np.float64), 3)
  for name, code in (("B", 1), ("T", 0)):
    idx = np.flatnonzero(codes == code)
    m, cov = gaussians_cells.neighbourhood_gaussians(
        feats, idx[gaussians_cells.knn(feats[idx], 6)], 1e-3)
    got_m, got_cov = unpack_gaussians(pops.samples[list(pops.names).index(name)])
    np.testing.assert_allclose(got_m, m, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_cov, cov, rtol=1e-5, atol=1e-6)


def test_anndata_written_files(tmp_path):
  import anndata  # pylint: disable=import-outside-toplevel
  import pandas as pd  # pylint: disable=import-outside-toplevel
  from scipy import sparse  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  kind = pd.Categorical(["x"] * 10 + ["y"] * 10)
  pcs = rng.normal(size=(20, 4))
  path = tmp_path / "new.h5ad"
  anndata.AnnData(obs=pd.DataFrame({"kind": kind}, index=[str(i) for i in range(20)]),
                  obsm={"X_pca": pcs}).write_h5ad(path)
  x, labels, is_pca = gaussians_cells.read_h5ad_pcs_labels(path, "kind")
  assert is_pca and list(np.unique(labels)) == ["x", "y"]
  np.testing.assert_array_equal(x, pcs)
  # No X_pca: X itself (sparse X is densified; the old reader refused it).
  expr = rng.poisson(1.0, size=(20, 6)).astype(np.float32)
  path = tmp_path / "x.h5ad"
  anndata.AnnData(X=sparse.csr_matrix(expr),
                  obs=pd.DataFrame({"kind": kind}, index=[str(i) for i in range(20)])
                  ).write_h5ad(path)
  x, labels, is_pca = gaussians_cells.read_h5ad_pcs_labels(path, "kind")
  assert not is_pca
  np.testing.assert_array_equal(x, expr.astype(np.float64))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    gaussians_cells.read_h5ad_pcs_labels(tmp_path / "absent.h5ad", "kind")


@pytest.mark.skipif(importlib.util.find_spec("scanpy") is None,
                    reason="scanpy (optional extra `scanpy`) is not installed")
def test_pbmc68k_bundled_with_scanpy():
  pops = gaussians_cells.pbmc_metacells(dim=4, k=8)
  assert pops.event_shape == (5, 4) and len(pops.names) >= 8
  assert_spd(pops)


def test_seqfish_niches(shared_data):
  folder = shared_data / "seqfish_cortex"
  if not folder.is_dir():
    pytest.skip(f"{folder} is absent")
  pops = gaussians_cells.seqfish_niches(path=str(folder), dim=4, k=8)
  assert pops.event_shape == (5, 4) and [len(s) for s in pops.samples] == [1597]
  assert_spd(pops)
  with pytest.raises(ValueError, match="needs path"):
    gaussians_cells.seqfish_niches()

"""Gaussians from single-cell data for Bures–Wasserstein FM (WFM §4.1.2, App. F.1, Table 2).

A cell's neighbourhood becomes one Gaussian: the mean and covariance of its
neighbours' principal components (Haviv et al. 2024b; WFM App. F.1).

* `pbmc_metacells`: scanpy's bundled `pbmc68k_reduced` (700 PBMCs, 10 bulk
  cell-type labels). A metacell is a cell with its k - 1 nearest neighbours of
  the same label in the top `dim` PCs (the file's `X_pca`); one condition per
  label with at least k cells (conditional generation as in WFM Fig. S3). The
  file ships inside the scanpy wheel as `scanpy/datasets/10x_pbmc68k_reduced.h5ad`;
  it is located with `importlib.util.find_spec("scanpy")` WITHOUT importing
  scanpy (heavy) and read with anndata (`flowzoo.data.h5ad`), so `pip install
  scanpy` (the `scanpy` extra) suffices, or pass `path=` to any h5ad with
  `obsm/X_pca` (or `X`, then PCA is computed) and an `obs` column `label_key`.
* `seqfish_niches`: seqFISH mouse visual cortex (Zhu et al. 2018; 1,597 cells x
  125 z-scored genes with x/y positions, e.g. ../shared/data/seqfish_cortex).
  A niche is a cell with its k - 1 nearest spatial neighbours, in the top
  `dim` expression PCs (WFM App. F.1 uses k = 16 neighbours and 16 PCs). The
  copy has no cell-type labels: one unconditional condition.

PCs are divided by one global scale (the root mean PC variance) so that
Gaussians are O(1) whatever the data's units; a `ridge` (relative to the mean
eigenvalue) keeps every covariance positive definite.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from flowzoo.data import h5ad
from flowzoo.data.gaussians import gaussian_populations
from flowzoo.data.populations import Populations
from flowzoo.data.pca import fit_pca
from flowzoo.registry import DATASETS

PBMC_FILE = Path("datasets") / "10x_pbmc68k_reduced.h5ad"


def neighbourhood_gaussians(feats: np.ndarray, neighbours: np.ndarray, ridge: float
                            ) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance `[n, D]`, `[n, D, D]` of `feats[neighbours[i]]` for each row i.

  Args:
    feats: `[N, D]` features; neighbours: `[n, k]` row indices into feats.
    ridge: added to each covariance as ridge * (its mean eigenvalue) * I.
  """
  pts = feats[neighbours]  # [n, k, D]
  m = pts.mean(1)
  xc = pts - m[:, None]
  cov = np.einsum("nki,nkj->nij", xc, xc) / pts.shape[1]
  d = feats.shape[1]
  cov += ridge * (np.trace(cov, axis1=1, axis2=2) / d)[:, None, None] * np.eye(d)
  return m, cov


def knn(points: np.ndarray, k: int) -> np.ndarray:
  """Indices `[n, k]` of each point's k nearest points (itself first)."""
  from sklearn.neighbors import NearestNeighbors
  return NearestNeighbors(n_neighbors=k).fit(points).kneighbors(points)[1]


def standardised_pcs(x: np.ndarray, dim: int) -> np.ndarray:
  """Top `dim` PCs of `x` `[N, G]` (or the first `dim` columns of given PCs), globally scaled."""
  if x.shape[1] < dim:
    raise ValueError(f"asked for {dim} PCs but the data have only {x.shape[1]} columns.")
  pcs = x[:, :dim] - x[:, :dim].mean(0)
  return pcs / np.sqrt(np.mean(pcs.var(0)))


def _pca(x: np.ndarray, dim: int) -> np.ndarray:
  return fit_pca(x, dim)(x)


def _check_args(who: str, dim: int, k: int, ridge: float) -> None:
  if dim < 1 or k < 2 or ridge < 0:
    raise ValueError(f"{who}: need dim >= 1, k >= 2 and ridge >= 0; got {dim}, {k}, {ridge}.")


# -- pbmc68k_reduced -----------------------------------------------------------------------
def find_pbmc68k() -> Path:
  """Path of scanpy's bundled pbmc68k_reduced h5ad, without importing scanpy."""
  spec = importlib.util.find_spec("scanpy")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "pbmc_metacells needs scanpy's bundled pbmc68k_reduced.h5ad: install the `scanpy` "
        "extra (pip install scanpy) or pass path=<file.h5ad>.")
  path = Path(list(spec.submodule_search_locations)[0]) / PBMC_FILE
  if not path.is_file():
    raise FileNotFoundError(f"scanpy is installed but {path} is missing.")
  return path


def read_h5ad_pcs_labels(path: str | Path, label_key: str
                         ) -> tuple[np.ndarray, np.ndarray, bool]:
  """(`obsm/X_pca` or `X` `[N, *]`, string labels `obs/<label_key>` `[N]`, is-PCA flag).

  Read with the project's one h5ad reader (`flowzoo.data.h5ad`, anndata), which
  handles the legacy layout of pbmc68k_reduced (compound `obs`/`obsm` tables,
  categories in `uns/<key>_categories`) and anndata >= 0.7 groups alike.
  """
  adata = h5ad.read(path)
  if label_key not in adata.obs.columns:
    raise KeyError(f"{path}: obs has no column {label_key!r}; columns: "
                   f"{list(adata.obs.columns)}.")
  labels = h5ad.obs_labels(adata, label_key)
  if "X_pca" in adata.obsm:
    return h5ad.matrix(adata, obsm="X_pca"), labels, True
  if adata.X is None or adata.n_vars == 0:
    raise ValueError(f"{path}: no obsm/X_pca and no X to compute PCs from.")
  return h5ad.matrix(adata), labels, False


@DATASETS.register("pbmc_metacells")
def pbmc_metacells(*, path: str = "", label_key: str = "bulk_labels", dim: int = 8, k: int = 12,
                   ridge: float = 1e-3) -> Populations:
  """Metacell Gaussians of pbmc68k_reduced, one condition per cell-type label (module doc).

  Args:
    path: an h5ad file; "" = scanpy's bundled pbmc68k_reduced (needs scanpy installed).
    label_key: `obs` column with the conditions.
    dim: number of top PCs (Gaussian dimension D).
    k: cells per metacell (a cell and its k - 1 nearest neighbours of the same label);
      labels with fewer than k cells are left out.
    ridge: relative covariance ridge.
  """
  _check_args("pbmc_metacells", dim, k, ridge)
  file = Path(path) if path else find_pbmc68k()
  x, labels, is_pca = read_h5ad_pcs_labels(file, label_key)
  feats = standardised_pcs(x if is_pca else _pca(x, dim), dim)
  groups, dropped = {}, []
  for label in sorted(set(labels)):
    idx = np.flatnonzero(labels == label)
    if len(idx) < k:
      dropped.append(f"{label} ({len(idx)} cells)")
      continue
    groups[label] = neighbourhood_gaussians(feats, idx[knn(feats[idx], k)], ridge)
  if not groups:
    raise ValueError(f"pbmc_metacells: no label of {label_key!r} has k={k} cells.")
  info = f"pbmc68k_reduced metacells ({k} cells, {dim} PCs) from {file.name}"
  if dropped:
    info += f"; left out labels with < {k} cells: {', '.join(dropped)}"
  return gaussian_populations(groups, info=info)


# -- seqFISH cortex ------------------------------------------------------------------------
@DATASETS.register("seqfish_niches")
def seqfish_niches(*, path: str = "", dim: int = 8, k: int = 16, ridge: float = 1e-3
                   ) -> Populations:
  """Spatial niches of the seqFISH cortex as Gaussians in expression-PC space (module doc).

  Args:
    path: folder with `fcortex.expression.txt` and `fcortex.coordinates.txt`
      (e.g. ../shared/data/seqfish_cortex).
    dim: number of expression PCs (Gaussian dimension D).
    k: cells per niche (a cell and its k - 1 nearest spatial neighbours).
    ridge: relative covariance ridge.
  """
  _check_args("seqfish_niches", dim, k, ridge)
  if not path:
    raise ValueError("seqfish_niches needs path=<folder>, e.g. ../shared/data/seqfish_cortex.")
  folder = Path(path)
  files = [folder / "fcortex.expression.txt", folder / "fcortex.coordinates.txt"]
  for f in files:
    if not f.is_file():
      raise FileNotFoundError(f"seqfish_niches: {f} does not exist.")
  expr, coords = np.loadtxt(files[0]), np.loadtxt(files[1])
  if len(expr) != len(coords) or not np.array_equal(expr[:, 0], coords[:, 0]):
    raise ValueError(f"seqfish_niches: expression and coordinate files list different cells "
                     f"({len(expr)} vs {len(coords)} rows).")
  if k > len(expr):
    raise ValueError(f"seqfish_niches: k={k} exceeds the {len(expr)} cells.")
  feats = standardised_pcs(_pca(expr[:, 1:], dim), dim)
  m, cov = neighbourhood_gaussians(feats, knn(coords[:, 2:4], k), ridge)
  return gaussian_populations({"niches": (m, cov)},
                              info=f"seqFISH cortex niches ({k} cells, {dim} PCs)")

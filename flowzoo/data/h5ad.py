"""The one `.h5ad` reader of flowzoo: anndata, with errors that name the problem.

Every dataset that reads AnnData files goes through `read` and pulls arrays
out with `matrix` and `obs_labels`, so there is one place that knows the
format (anndata handles every layout it ever wrote: the legacy compound
`obs`/`obsm` tables of scanpy's pbmc68k_reduced as well as the group
encodings of anndata >= 0.7).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata
import numpy as np
from scipy import sparse


def read(path: str | Path) -> anndata.AnnData:
  """The AnnData in `path`, fully in memory; raises FileNotFoundError if absent."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"h5ad file {path} does not exist.")
  with warnings.catch_warnings():
    # Legacy files (scanpy's bundled pbmc68k_reduced) are read correctly; the
    # notice that they lack encoding metadata is not actionable for a user.
    warnings.simplefilter("ignore", anndata.OldFormatWarning)
    return anndata.read_h5ad(path)


def matrix(adata: anndata.AnnData, *, layer: str = "", obsm: str = "",
           dtype=np.float64) -> np.ndarray:
  """A dense `[n_obs, D]` array: `X`, `layers[layer]` or `obsm[obsm]`.

  Args:
    adata: from `read`.
    layer: a key of `adata.layers`; "" = `X`.
    obsm: a key of `adata.obsm` (takes precedence over `layer`); "" = none.
    dtype: output dtype.
  Raises:
    KeyError: naming the available layers / obsm keys.
  """
  if obsm:
    if obsm not in adata.obsm:
      raise KeyError(f"h5ad has no obsm[{obsm!r}]; obsm keys: {sorted(adata.obsm)}.")
    x = adata.obsm[obsm]
  elif layer:
    if layer not in adata.layers:
      raise KeyError(f"h5ad has no layer {layer!r}; layers: {sorted(adata.layers)} "
                     "(use layer='' for X).")
    x = adata.layers[layer]
  else:
    if adata.X is None:
      raise ValueError("h5ad has no X matrix; pass a layer or an obsm key.")
    x = adata.X
  x = x.toarray() if sparse.issparse(x) else np.asarray(x)
  return x.astype(dtype, copy=False).reshape(adata.n_obs, -1)


def obs_labels(adata: anndata.AnnData, key: str) -> np.ndarray:
  """`obs[key]` as a `[n_obs]` array of str; raises KeyError listing the columns."""
  if key not in adata.obs.columns:
    raise KeyError(f"h5ad obs has no column {key!r}; columns: {list(adata.obs.columns)}.")
  col = adata.obs[key]
  if col.isna().any():
    rows = np.flatnonzero(col.isna().to_numpy())
    raise ValueError(f"obs[{key!r}] is missing (NaN) in {rows.size} cell(s), e.g. rows "
                     f"{rows[:5].tolist()}.")
  return col.astype(str).to_numpy()

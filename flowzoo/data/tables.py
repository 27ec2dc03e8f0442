"""Readers of per-cell profile tables: npz, h5ad, parquet, csv -> (features, metadata)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def read_cell_table(path: str | Path, *, features_key: str = "X",
                    obsm_key: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
  """Per-cell features `[N, D]` and metadata from npz, h5ad (anndata), parquet or csv.

  npz: array `features_key` plus 1-D arrays of length N (the columns).
  h5ad: `X` (dense or sparse) or `obsm/<obsm_key>`, columns from `obs`, read
  with the project's one h5ad reader (`flowzoo.data.h5ad`).
  parquet/csv: numeric columns whose name starts with `features_key` are
  features (e.g. "X0", "X1", ...); the others are metadata.
  """
  path = Path(path)
  suffix = path.suffix.lower()
  if suffix == ".npz":
    with np.load(path, allow_pickle=False) as z:
      if features_key not in z:
        raise KeyError(f"{path}: no array {features_key!r}; arrays: {sorted(z.files)}.")
      x = z[features_key]
      meta = pd.DataFrame({k: z[k] for k in z.files if k != features_key and z[k].ndim == 1
                           and len(z[k]) == len(x)})
    return x.reshape(len(x), -1), meta
  if suffix in (".h5ad", ".h5"):
    from flowzoo.data import h5ad  # pylint: disable=import-outside-toplevel
    adata = h5ad.read(path)
    x = h5ad.matrix(adata, obsm=obsm_key or "", dtype=np.float32)
    # Categorical columns as their values (str compounds, numeric doses stay numeric).
    meta = pd.DataFrame({k: np.asarray(col) for k, col in adata.obs.items()})
    return x, meta.infer_objects()
  if suffix in (".parquet", ".csv"):
    table = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    feats = [c for c in table.columns if str(c).startswith(features_key)
             and pd.api.types.is_numeric_dtype(table[c])]
    if not feats:
      raise KeyError(f"{path}: no numeric feature columns starting with {features_key!r}.")
    return table[feats].to_numpy(np.float32), table.drop(columns=feats)
  raise ValueError(f"{path}: unsupported format {suffix!r}; use .npz, .h5ad, .parquet or .csv.")

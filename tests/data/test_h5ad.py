"""The one h5ad reader: X (dense or sparse), layers, obsm and obs labels, with clear errors."""

import anndata
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from flowzoo.data import h5ad


@pytest.fixture
def path(tmp_path):
  x = np.arange(12, dtype=np.float32).reshape(4, 3)
  obs = pd.DataFrame({"kind": pd.Categorical(["a", "b", "a", "b"]), "num": [1, 2, 3, 4]},
                     index=[f"c{i}" for i in range(4)])
  adata = anndata.AnnData(X=sparse.csr_matrix(x), obs=obs, layers={"twice": 2 * x},
                          obsm={"emb": np.ones((4, 2))})
  p = tmp_path / "a.h5ad"
  adata.write_h5ad(p)
  return p


def test_arrays_and_labels(path):
  adata = h5ad.read(path)
  x = np.arange(12, dtype=np.float64).reshape(4, 3)
  np.testing.assert_array_equal(h5ad.matrix(adata), x)  # sparse X densified
  np.testing.assert_array_equal(h5ad.matrix(adata, layer="twice"), 2 * x)
  np.testing.assert_array_equal(h5ad.matrix(adata, obsm="emb"), np.ones((4, 2)))
  assert h5ad.matrix(adata, dtype=np.float32).dtype == np.float32
  assert list(h5ad.obs_labels(adata, "kind")) == ["a", "b", "a", "b"]
  assert list(h5ad.obs_labels(adata, "num")) == ["1", "2", "3", "4"]


def test_errors_name_what_exists(path, tmp_path):
  adata = h5ad.read(path)
  with pytest.raises(KeyError, match=r"no layer 'raw'; layers: \['twice'\]"):
    h5ad.matrix(adata, layer="raw")
  with pytest.raises(KeyError, match=r"no obsm\['X_pca'\]; obsm keys: \['emb'\]"):
    h5ad.matrix(adata, obsm="X_pca")
  with pytest.raises(KeyError, match=r"no column 'cell'; columns: \['kind', 'num'\]"):
    h5ad.obs_labels(adata, "cell")
  adata.obs["gap"] = ["a", None, "b", "c"]
  with pytest.raises(ValueError, match=r"missing \(NaN\) in 1 cell\(s\), e.g. rows \[1\]"):
    h5ad.obs_labels(adata, "gap")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    h5ad.read(tmp_path / "none.h5ad")

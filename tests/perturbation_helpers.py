"""A tiny hand-built AnnData perturbation screen shared by the perturbation tests."""

import anndata
import numpy as np
import pandas as pd
from scipy import sparse

# Context x: control, A, B, C, A+B, A+C, D+E; context y: control, A, B.
CELLS = [("ctrl", "x", 6), ("A", "x", 4), ("B", "x", 4), ("C", "x", 4), ("A+B", "x", 3),
         ("A+C", "x", 3), ("D+E", "x", 3), ("ctrl", "y", 5), ("A", "y", 4), ("B", "y", 3)]
GENES = 6
# `anndata_perturbations.load` arguments for files written by `write`.
LOAD_ARGS = dict(perturbation_key="pert", controls=("ctrl",), covariate_keys=("cell_line",),
                 split="combo", heldout=("A+B|x",), num_validation=0)


def write(tmp_path, cells=CELLS, *, x=None, layer=None, extra_categories=(), name="toy.h5ad"):
  """A tiny h5ad: `X` (or a layer) of per-cell expression, obs pert/cell_line/dose.

  Returns:
    (path, x) with x `[cells, GENES]` float32 the expression written.
  """
  pert = [p for p, _, n in cells for _ in range(n)]
  line = [c for _, c, n in cells for _ in range(n)]
  rng = np.random.default_rng(0)
  if x is None:
    x = rng.poisson(1.0, size=(len(pert), GENES)).astype(np.float32)
  obs = pd.DataFrame({
      "pert": pd.Categorical(pert, categories=sorted(set(pert)) + list(extra_categories)),
      "cell_line": pd.Categorical(line),
      "dose": pd.Categorical(["1+1" if "+" in p else "1" for p in pert])},
      index=[f"cell{i}" for i in range(len(pert))])
  var = pd.DataFrame(index=[f"g{j}" for j in range(x.shape[1])])
  if layer:
    adata = anndata.AnnData(X=np.zeros_like(x), obs=obs, var=var, layers={layer: x})
  else:
    adata = anndata.AnnData(X=sparse.csr_matrix(x), obs=obs, var=var)
  path = tmp_path / name
  adata.write_h5ad(path)
  return path, x

"""Generated cells written back as h5ad: obs, X in gene space, config in uns."""

import json

import anndata
import numpy as np
import pytest

from flowzoo import generated_cells
from flowzoo.data import anndata_perturbations as ap
from tests.perturbation_helpers import GENES, LOAD_ARGS, write


def test_generated_and_real_cells(tmp_path):
  path, x = write(tmp_path)
  data = ap.load(str(path), **LOAD_ARGS)
  fake = np.full((5, GENES), 7.0, np.float32)
  config = {"dataset": {"name": ap.NAME}, "seed": 3}
  adata = generated_cells.generated_anndata(data, {"heldout/A+B|x": fake}, config)
  assert adata.shape == (5 + 3, GENES) and list(adata.var_names) == list(data.genes)
  obs = adata.obs
  assert list(obs["kind"]) == ["generated"] * 5 + ["real"] * 3
  assert set(obs["condition"]) == {"A+B|x"} and set(obs["perturbation"]) == {"A+B"}
  assert set(obs["cell_line"]) == {"x"} and set(obs["split"]) == {"heldout"}
  np.testing.assert_array_equal(adata.X[:5], fake)
  np.testing.assert_array_equal(adata.X[5:], x[18:21])  # the real A+B cells
  assert json.loads(adata.uns["config"]) == config
  with pytest.raises(KeyError, match="'Q\\|x', which is not a condition"):
    generated_cells.generated_anndata(data, {"heldout/Q|x": fake}, config)


def test_pca_space_samples_are_decoded(tmp_path):
  path, _ = write(tmp_path)
  data = ap.load(str(path), **dict(LOAD_ARGS, pca_components=2))
  z = np.array([[1.0, -1.0], [0.5, 0.0]], np.float32)
  adata = generated_cells.generated_anndata(data, {"heldout/A+B|x": z}, {}, include_real=False)
  expected = z @ data.pca.components_ + data.pca.mean_
  np.testing.assert_allclose(adata.X, expected, rtol=1e-5, atol=1e-5)


def test_write_run_round_trip(tmp_path):
  path, _ = write(tmp_path)
  config = {"dataset": dict(name=ap.NAME, path=str(path), **{k: list(v) if isinstance(v, tuple)
                                                             else v for k, v in LOAD_ARGS.items()})}
  out = generated_cells.write_run(tmp_path, config, {"heldout/A+B|x": np.zeros((4, GENES))})
  back = anndata.read_h5ad(out)
  assert out.name == "generated.h5ad" and back.n_obs == 4 + 3
  assert json.loads(back.uns["config"])["dataset"]["path"] == str(path)
  assert generated_cells.write_run(tmp_path, {"dataset": {"name": "letters"}}, {"x": 1}) is None

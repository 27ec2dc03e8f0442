"""BBBC021 populations: real-data loaders, named/random splits, PCA, simulator."""

import anndata
import numpy as np
import pandas as pd
import pytest

from flowzoo.data import bbbc021 as B
from flowzoo.data import pca as pca_lib
from flowzoo.data import splits
from flowzoo.data.bbbc021_sim import COMPOUND_MOA, bbbc021_sim, mixture_params
from flowzoo.registry import DATASETS

WELLS = "bbbc021_wells/BBBC021_feature_selected_mad_robustize.csv"
FP = "compound_embeddings/embeddings/csv/emb_fp.csv"


@pytest.fixture
def wells(shared_data):
  """../shared/data (the conftest fixture skips when it is absent)."""
  return shared_data


# ---------------------------------------------------------------- real wells


def test_wells_by_compound(wells):
  pops = B.bbbc021_wells(str(wells / WELLS), str(wells / FP), split="cellflux")
  table = pd.read_csv(wells / WELLS)
  fp = pd.read_csv(wells / FP, index_col=0)
  # 38 compounds + DMSO in the CSV; AZ-A/C/J/U have no IMPA fingerprint.
  assert len(pops.names) == 35 and pops.event_shape == (189,) and pops.cond_dim == 1024
  assert "AZ-A" not in pops.names and "['AZ-A', 'AZ-C', 'AZ-J', 'AZ-U']" in pops.info
  i = pops.names.index("DMSO")
  assert pops.samples[i].shape[0] == 330 and pops.splits[i] == "train"
  assert not pops.descriptors[i].any()
  taxol = pops.names.index("taxol")
  np.testing.assert_array_equal(pops.descriptors[taxol], fp.loc["taxol"].to_numpy(np.float32))
  assert pops.covariates["moa"][taxol] == "Microtubule stabilizers"
  rows = table[table.Metadata_Compound == "taxol"]
  np.testing.assert_allclose(pops.samples[taxol], rows.iloc[:, 5:].to_numpy(np.float32))
  # Sources: DMSO wells of exactly taxol's plates.
  ctrl = table[(table.Metadata_Compound == "DMSO") & table.Metadata_Plate.isin(rows.Metadata_Plate)]
  np.testing.assert_allclose(np.sort(pops.sources[taxol], 0),
                             np.sort(ctrl.iloc[:, 5:].to_numpy(np.float32), 0))
  held = sorted(n for n, s in zip(pops.names, pops.splits) if s == "heldout")
  assert set(held) == set(splits.CELLFLUX_HELDOUT) and len(held) == 8


def test_wells_by_dose_appends_log_dose_and_reduces(wells):
  pops = B.bbbc021_wells(str(wells / WELLS), str(wells / FP), group_by="compound_dose",
                         split="impa", pca_components=10, descriptor_transform="binary")
  assert pops.event_shape == (10,) and pops.cond_dim == 1025
  assert min(s.shape[0] for s in pops.samples) >= 2
  i = pops.names.index("taxol@3")
  assert pops.descriptors[i, -1] == pytest.approx(np.log1p(3.0))
  assert set(np.unique(pops.descriptors[:, :-1])) <= {0.0, 1.0}
  assert {c for c, s in zip(pops.covariates["compound"], pops.splits)
          if s == "heldout"} == set(splits.IMPA_HELDOUT)
  with pytest.raises(ValueError, match="no descriptor for compound.*AZ-A"):
    B.bbbc021_wells(str(wells / WELLS), str(wells / FP), missing_descriptors="error")
  # Holding out a compound that was dropped for lacking a descriptor says why.
  with pytest.raises(ValueError, match=r"\['AZ-A'\] that are not treated.*Dropped earlier for "
                                       r"having no descriptor.*'AZ-A'"):
    B.bbbc021_wells(str(wells / WELLS), str(wells / FP), split="taxol;AZ-A")


def test_split_constants_equal_the_original_files(wells):
  d = wells / "bbbc021_splits"
  assert splits.read_heldout_list("cellflux", d) == splits.CELLFLUX_HELDOUT
  assert splits.read_heldout_list("impa", d) == splits.IMPA_HELDOUT
  names = list(COMPOUND_MOA)
  assert splits.assign_splits(names, "cellflux", splits_dir=d) == splits.assign_splits(names, "cellflux")


def test_simulator_moa_table_matches_the_real_screen(wells):
  table = pd.read_csv(wells / WELLS)
  real = dict(zip(table.Metadata_Compound, table.Metadata_moa))
  assert {c: real[c] for c in COMPOUND_MOA} == COMPOUND_MOA


# ---------------------------------------------------------------- splits


def test_random_split_is_seeded_and_disjoint():
  names = list(COMPOUND_MOA)
  a = splits.assign_splits(names, "random", heldout_fraction=0.3, num_validation=4, seed=3)
  assert a == splits.assign_splits(names[::-1], "random", heldout_fraction=0.3, num_validation=4, seed=3)
  assert a != splits.assign_splits(names, "random", heldout_fraction=0.3, num_validation=4, seed=4)
  held = {c for c, s in a.items() if s == "heldout"}
  val = {c for c, s in a.items() if s == "validation"}
  assert len(held) == round(0.3 * 34) and len(val) == 4 and not held & val
  assert a["DMSO"] == "train"


def test_split_errors_list_the_problem():
  names = list(COMPOUND_MOA)
  with pytest.raises(ValueError, match=r"\['aspirin'\] that are not treated compounds"):
    splits.assign_splits(names, ["taxol", "aspirin"])
  with pytest.raises(ValueError, match="Unknown split 'cellflx'"):
    splits.assign_splits(names, "cellflx")
  with pytest.raises(ValueError, match=r"\['aspirin'\] that are not treated compounds"):
    splits.assign_splits(names, "taxol; aspirin")
  with pytest.raises(ValueError, match="num_validation=40"):
    splits.assign_splits(names, "cellflux", num_validation=40)


def test_split_list_as_one_string_from_the_command_line():
  names = list(COMPOUND_MOA)
  a = splits.assign_splits(names, "taxol; AZ138;")
  assert a == splits.assign_splits(names, ["taxol", "AZ138"])
  assert sorted(c for c, s in a.items() if s == "heldout") == ["AZ138", "taxol"]


# ---------------------------------------------------------------- files written here


def _cells(n=60, d=4, seed=0):
  rng = np.random.default_rng(seed)
  compound = np.array(["DMSO", "taxol", "AZ841"] * (n // 3))
  return dict(X=rng.normal(size=(n, d)).astype(np.float32), compound=compound,
              dose=np.where(compound == "DMSO", 0.0, np.tile([0.1, 0.1, 0.1, 1.0, 1.0, 1.0], n // 6)),
              plate=np.repeat(["p1", "p2"], n // 2), moa=np.array(["x"] * n))


def _table():
  return pd.DataFrame([[1.0, 0.0], [0.0, 1.0]], index=["taxol", "AZ841"])


def _write_h5ad(path, c):
  obs = pd.DataFrame({"compound": pd.Categorical(c["compound"]), "dose": c["dose"],
                      "plate": c["plate"], "moa": c["moa"]},
                     index=[str(i) for i in range(len(c["X"]))])
  anndata.AnnData(X=c["X"], obs=obs).write_h5ad(path)


@pytest.mark.parametrize("fmt", ["npz", "h5ad", "parquet"])
def test_cells_loader_formats_agree(tmp_path, fmt):
  c = _cells()
  path = tmp_path / f"cells.{fmt}"
  if fmt == "npz":
    np.savez(path, **c)
  elif fmt == "h5ad":
    _write_h5ad(path, c)
  else:
    pytest.importorskip("pyarrow")
    df = pd.DataFrame({k: v for k, v in c.items() if k != "X"})
    for j in range(c["X"].shape[1]):
      df[f"X{j}"] = c["X"][:, j]
    df.to_parquet(path)
  pops = B.bbbc021_cells(str(path), _table(), split=["AZ841"])
  assert pops.names == ["AZ841@0.1", "AZ841@1", "DMSO", "taxol@0.1", "taxol@1"]
  assert pops.splits == ["heldout", "heldout", "train", "train", "train"]
  i = pops.names.index("taxol@1")
  rows = (c["compound"] == "taxol") & (c["dose"] == 1.0)
  np.testing.assert_allclose(pops.samples[i], c["X"][rows])
  np.testing.assert_allclose(pops.descriptors[i], [1.0, 0.0, np.log1p(1.0)], rtol=1e-6)
  # Controls of the plates taxol@1 was imaged on.
  ctrl = (c["compound"] == "DMSO") & np.isin(c["plate"], c["plate"][rows])
  np.testing.assert_allclose(pops.sources[i], c["X"][ctrl])


def test_bad_input_messages(tmp_path):
  c = _cells()
  path = tmp_path / "cells.npz"
  np.savez(path, **{k: v for k, v in c.items() if k != "plate"})
  with pytest.raises(KeyError, match=r"cells\.npz: missing metadata column\(s\) \['plate'\]"):
    B.bbbc021_cells(str(path), _table())
  c["X"][7, 1] = np.nan
  np.savez(path, **c)
  with pytest.raises(ValueError, match=r"cells\.npz: features contain NaN/inf in 1 row"):
    B.bbbc021_cells(str(path), _table())
  np.savez(path, **_cells())
  with pytest.raises(ValueError, match="descriptors='onehot'"):
    B.bbbc021_cells(str(path))
  onehot = B.bbbc021_cells(str(path), "onehot", split="none", group_by="compound")
  assert onehot.cond_dim == 3 and set(onehot.splits) == {"train"}
  with pytest.raises(FileNotFoundError, match="no well profile file.*nope.csv"):
    B.bbbc021_wells(str(tmp_path / "nope.csv"))


# ---------------------------------------------------------------- PCA


def test_pca_is_fitted_on_train_only():
  pops = bbbc021_sim(cells_per_population=32, dim=8)
  k = 3
  red = pca_lib.reduce_populations(pops, k)
  held = pops.split_ids("heldout")
  # Changing held-out cells must not change how train cells are projected.
  shifted = [s + 100.0 * (i in held) for i, s in enumerate(pops.samples)]
  red2 = pca_lib.reduce_populations(
      type(pops)(pops.names, shifted, pops.descriptors, pops.splits, pops.covariates,
                 pops.sources, pops.info), k)
  for i in pops.split_ids("train"):
    np.testing.assert_allclose(red.samples[i], red2.samples[i], atol=1e-4)
  # The projection is onto the top-k principal directions (numpy SVD as the reference):
  # projected train cells keep the top-k singular values' share of the variance.
  x = np.concatenate([pops.samples[i] for i in pops.split_ids("train")]).astype(np.float64)
  project = pca_lib.fit_pca(x, k)
  s = np.linalg.svd(x - x.mean(0), compute_uv=False)
  np.testing.assert_allclose(project.pca.explained_variance_ratio_, s[:k] ** 2 / np.sum(s ** 2),
                             rtol=1e-4)
  np.testing.assert_allclose(np.var(project(x), 0, ddof=1), s[:k] ** 2 / (len(x) - 1), rtol=1e-3)
  with pytest.raises(ValueError, match="k=9 components"):
    pca_lib.fit_pca(x, 9)


# ---------------------------------------------------------------- simulator


def test_sim_shapes_split_sources_and_info():
  pops = DATASETS.build("bbbc021_sim", dict(dim=6, descriptor_dim=5, cells_per_population=40))
  assert len(pops.names) == 35 and pops.event_shape == (6,) and pops.cond_dim == 5
  assert {n for n, s in zip(pops.names, pops.splits) if s == "heldout"} == set(splits.CELLFLUX_HELDOUT)
  assert all(s.shape == (40, 6) for s in pops.samples)
  assert "SIMULATED" in pops.info and "mixflow_bbbc021.py" in pops.info
  # Every compound's sources are DMSO control cells of its own plates.
  ctrl = pops.sources[pops.names.index("DMSO")]
  assert ctrl.shape[0] == 10 * 64
  for src, plates in zip(pops.sources, pops.covariates["plates"]):
    assert src.shape[0] == 64 * len(plates.split(","))
    assert all((ctrl == row).all(1).any() for row in src[:5])
  with pytest.raises(TypeError, match="unknown argument"):
    DATASETS.build("bbbc021_sim", dict(cells=3))


def test_sim_is_deterministic():
  a, b = bbbc021_sim(seed=1, cells_per_population=8), bbbc021_sim(seed=1, cells_per_population=8)
  c = bbbc021_sim(seed=2, cells_per_population=8)
  np.testing.assert_array_equal(a.descriptors, b.descriptors)
  for x, y in zip(a.samples + a.sources, b.samples + b.sources):
    np.testing.assert_array_equal(x, y)
  assert not np.allclose(a.descriptors, c.descriptors)


def _pair_means(values, moa):
  d = np.linalg.norm(values[:, None] - values[None], axis=-1)
  same = moa[:, None] == moa[None]
  off = ~np.eye(len(moa), dtype=bool)
  return d[same & off].mean(), d[~same].mean()


def test_sim_moa_structure_and_heldout_predictable_from_descriptors():
  pops = bbbc021_sim(cells_per_population=400)
  moa = np.array(pops.covariates["moa"])
  treated = moa != "DMSO"
  same, diff = _pair_means(pops.descriptors[treated], moa[treated])
  assert same < 0.6 * diff
  means = np.stack([s.mean(0) for s in pops.samples])
  same, diff = _pair_means(means[treated], moa[treated])
  assert same < 0.6 * diff
  # Nearest train compound by descriptor predicts a held-out population far
  # better than an arbitrary train compound (the map is smooth in y).
  train = [i for i in pops.split_ids("train") if treated[i]]
  nn_err, avg_err = [], []
  for i in pops.split_ids("heldout"):
    dy = np.linalg.norm(pops.descriptors[train] - pops.descriptors[i], axis=1)
    err = np.linalg.norm(means[train] - means[i], axis=1)
    nn_err.append(err[np.argmin(dy)])
    avg_err.append(err.mean())
  assert np.mean(nn_err) < 0.6 * np.mean(avg_err)


def test_sim_populations_follow_the_mixture_and_are_multimodal():
  pops = bbbc021_sim(cells_per_population=3000, batch_effect=0.0, components=3, dim=4)
  from flowzoo.data.bbbc021_sim import _world  # pylint: disable=import-outside-toplevel
  world = _world(np.random.default_rng([0, 0]), moas=sorted(set(COMPOUND_MOA.values()) - {"DMSO"}),
                 descriptor_dim=32, dim=4, components=3, compound_noise=0.35, effect=1.5,
                 weight_effect=1.0)
  i = pops.names.index("taxol")
  w, mu, _ = mixture_params(world, pops.descriptors[i].astype(np.float64))
  np.testing.assert_allclose(pops.samples[i].mean(0), w @ mu, atol=0.1)
  assert np.sum(w > 0.05) >= 2


def test_empty_and_header_only_csv_say_so(tmp_path):
  empty = tmp_path / "empty.csv"
  empty.write_text("")
  with pytest.raises(ValueError, match="is empty"):
    B.bbbc021_wells(path=str(empty), descriptors="onehot")
  header = tmp_path / "header.csv"
  header.write_text("Metadata_Plate,Metadata_Compound,f1,f2\n")
  with pytest.raises(ValueError, match="has a header but no rows"):
    B.bbbc021_wells(path=str(header), descriptors="onehot")

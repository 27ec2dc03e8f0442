"""AnnData perturbation dataset: encoding, splits, PCA, bad input (hand-built files)."""

import numpy as np
import pandas as pd
import pytest

from flowzoo.data import anndata_perturbations as ap
from flowzoo.data import perturbation_encoding as enc
from flowzoo.data.populations import Populations
from flowzoo.registry import DATASETS
from tests.perturbation_helpers import CELLS, GENES, LOAD_ARGS, write


def load(path, **kw):
  return ap.load(str(path), **dict(LOAD_ARGS, **kw))


def test_conditions_cells_and_sources(tmp_path):
  path, x = write(tmp_path)
  d = load(path)
  pops = d.populations
  assert isinstance(pops, Populations)
  # Per context, control first, then by name ("+" sorts before "|").
  assert list(pops.names) == ["ctrl|x", "A+B|x", "A+C|x", "A|x", "B|x", "C|x", "D+E|x",
                              "ctrl|y", "A|y", "B|y"]
  assert dict(zip(pops.names, pops.splits))["A+B|x"] == "heldout"
  assert pops.splits.count("heldout") == 1 and pops.splits.count("validation") == 0
  # Cells of a condition are its rows, in file order; sources are the context's controls.
  np.testing.assert_array_equal(pops.samples[d.index("A|x")], x[6:10])
  np.testing.assert_array_equal(pops.samples[d.index("B|y")], x[-3:])
  np.testing.assert_array_equal(pops.sources[d.index("A+C|x")], x[:6])
  np.testing.assert_array_equal(pops.sources[d.index("A|y")], x[27:32])
  assert d.control_index[d.index("B|y")] == d.index("ctrl|y")
  assert d.genes == tuple(f"g{j}" for j in range(GENES))


def test_multi_hot_and_one_hot_by_hand(tmp_path):
  path, _ = write(tmp_path)
  d = load(path)
  assert d.encoder.singles == ("A", "B", "C", "D", "E")
  y = dict(zip(d.populations.names, d.populations.descriptors))
  #                              A  B  C  D  E | x  y
  np.testing.assert_array_equal(y["A+B|x"], [1, 1, 0, 0, 0, 1, 0])
  np.testing.assert_array_equal(y["ctrl|y"], [0, 0, 0, 0, 0, 0, 1])
  np.testing.assert_array_equal(y["B|y"], [0, 1, 0, 0, 0, 0, 1])
  # The unseen combination is the sum of its seen singles (PRiMeFlow Enc(c)).
  np.testing.assert_array_equal(y["A+B|x"][:5], y["A|x"][:5] + y["B|x"][:5])


def test_dose_one_hot_and_layer(tmp_path):
  path, x = write(tmp_path, layer="counts")
  d = load(path, layer="counts", dose_key="dose", heldout=("A+B",))  # a label: all its doses
  y = dict(zip(d.populations.names, d.populations.descriptors))
  assert d.encoder.doses == ("1", "1+1")
  assert "A+B|x|1+1" in y
  np.testing.assert_array_equal(y["A|x|1"][-2:], [1, 0])
  np.testing.assert_array_equal(y["A+B|x|1+1"][-2:], [0, 1])
  np.testing.assert_array_equal(d.populations.samples[d.index("A|x|1")], x[6:10])
  with pytest.raises(KeyError, match="no layer 'raw'.*counts"):
    load(path, layer="raw")


def test_gene_embeddings_sum_the_singles(tmp_path):
  path, _ = write(tmp_path)
  table = pd.DataFrame([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [1.0, 1.0], [5.0, 0.0]],
                       index=["A", "B", "C", "D", "E"], columns=["e0", "e1"])
  csv = tmp_path / "emb.csv"
  table.to_csv(csv)
  d = load(path, gene_embeddings=str(csv))
  y = dict(zip(d.populations.names, d.populations.descriptors))
  np.testing.assert_array_equal(y["A+B|x"], [1, 2, 1, 0])
  np.testing.assert_array_equal(y["A+C|x"], [4, 3, 1, 0])
  np.testing.assert_array_equal(y["ctrl|y"], [0, 0, 0, 1])
  table.drop(index=["C", "E"]).to_csv(csv)
  with pytest.raises(ValueError, match=r"no row for 2 perturbed gene\(s\): \['C', 'E'\]"):
    load(path, gene_embeddings=str(csv))


def test_pca_fitted_on_training_cells_only(tmp_path):
  path, x = write(tmp_path)
  d = load(path, pca_components=3, heldout=("A+B|x", "A+C|x"))
  held = d.index("A+B|x"), d.index("A+C|x")
  train = np.concatenate([s for k, s in enumerate(d.gene_samples) if k not in held])
  np.testing.assert_allclose(d.pca.mean_, train.mean(0), rtol=1e-6)
  assert not np.allclose(d.pca.mean_, x.mean(0))  # the held-out cells would shift it
  assert d.populations.event_shape == (3,)
  z = d.populations.samples[held[0]]
  np.testing.assert_allclose(z, (d.gene_samples[held[0]] - d.pca.mean_) @ d.pca.components_.T,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(d.populations.sources[held[0]], d.populations.samples[0])
  assert d.to_genes(z).shape == (3, GENES)


def test_bad_input_fails_with_a_clear_message(tmp_path):
  path, x = write(tmp_path, extra_categories=("F+G",))
  with pytest.raises(ValueError, match=r"control value\(s\) \['DMSO'\] absent from obs\['pert'\]"):
    load(path, controls=("DMSO",))
  # D+E: D and E appear in no other training condition.
  with pytest.raises(ValueError, match=r"never seen in training, so the multi-hot encoding "
                                       "cannot represent"):
    load(path, heldout=("D+E|x",))
  # D is trained, but only inside D+E: the combination task needs it alone.
  only_combo, _ = write(tmp_path, CELLS + [("A+D", "x", 3)], name="combo.h5ad")
  with pytest.raises(ValueError, match=r"\['D'\] are seen in training only inside other"):
    load(only_combo, heldout=("A+D|x",))
  with pytest.raises(ValueError, match=r"'C\|x' is a single perturbation, not a combination"):
    load(path, heldout=("C|x",))
  with pytest.raises(ValueError, match="has no cells"):
    load(path, heldout=("F+G",))
  with pytest.raises(ValueError, match="not observed in training in any other"):
    load(path, split="covariate", heldout=("C|x",))
  with pytest.raises(ValueError, match="min_cells=4"):
    load(path, min_cells=4)
  with pytest.raises(KeyError, match="no column 'cell_type'"):
    load(path, covariate_keys=("cell_type",))
  bad = x.copy()
  bad[7, 2] = np.nan
  nan_path, _ = write(tmp_path, x=bad, name="nan.h5ad")
  with pytest.raises(ValueError, match=r"NaN/inf in 1 cell\(s\), in condition\(s\) \['A\|x'\]"):
    load(nan_path)
  cells = [c for c in CELLS if c[:2] != ("ctrl", "y")]
  noctrl, _ = write(tmp_path, cells, name="noctrl.h5ad")
  with pytest.raises(ValueError, match=r"\[\('y',\)\] of \('cell_line',\) have no control cells"):
    load(noctrl)
  empty_part, _ = write(tmp_path, [("ctrl", "x", 3), ("A+", "x", 3)], name="part.h5ad")
  with pytest.raises(ValueError, match="empty part"):
    load(empty_part, heldout=())


def test_representability_guard():
  a = enc.Condition("A", ("A",), ("x",))
  conds = [enc.Condition("ctrl", (), ("x",)), a, enc.Condition("A+Z", ("A", "Z"), ("x",)),
           enc.Condition("A", ("A",), ("w",))]
  with pytest.raises(ValueError, match=r"\['Z'\] appear in no training condition"):
    enc.check_representable(conds, ["train", "train", "heldout", "train"],
                            uses_embeddings=False, covariate_keys=("line",))
  enc.check_representable(conds, ["train", "train", "heldout", "train"], uses_embeddings=True,
                          covariate_keys=("line",))
  with pytest.raises(ValueError, match="line='w' has no training condition"):
    enc.check_representable(conds, ["train", "train", "train", "validation"],
                            uses_embeddings=False, covariate_keys=("line",))


def test_validation_is_drawn_from_eligible_training_conditions(tmp_path):
  path, _ = write(tmp_path)
  d = load(path, heldout=("A+B|x",), num_validation=1)
  split = dict(zip(d.populations.names, d.populations.splits))
  assert split["A+C|x"] == "validation"  # the only other combination with seen singles
  with pytest.raises(ValueError, match="num_validation=2 but only 1"):
    load(path, heldout=("A+B|x",), num_validation=2)


def test_embedded_devel_default(shared_data):
  d = ap.load_cached()
  pops = d.populations
  assert pops.event_shape == (500,) and len(pops.names) == 64
  # The combinations whose both singles are measured alone in K562.
  eligible = {"KLF1+MAP2K6|k562", "KLF1+TGFBR2|k562", "MAP2K3+MAP2K6|k562",
              "MAP2K3+SLC38A2|k562", "MAPK1+TGFBR2|k562"}
  chosen = {n for n, s in zip(pops.names, pops.splits) if s != "train"}
  assert chosen <= eligible and len(chosen) == 3  # 2 held out + 1 validation
  # Byte-identical to the shared copy it was taken from.
  shared = shared_data / "perturbench_devel" / "devel.h5ad"
  assert shared.read_bytes() == ap.DEVEL_H5AD.read_bytes()
  built = DATASETS.build(ap.NAME, dict(split="covariate", heldout=("MAPK1|A172",),
                                       num_validation=0))
  assert dict(zip(built.names, built.splits))["MAPK1|A172"] == "heldout"

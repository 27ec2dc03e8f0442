"""Compound descriptor tables: name matching, controls, transforms, bad input."""

import numpy as np
import pandas as pd
import pytest

from flowzoo.data import descriptors as D
from flowzoo.data.bbbc021_sim import COMPOUND_MOA


def test_normalize_name_matches_spellings_across_sources():
  # IMPA / Broad spelling vs MorphoDiff's lower-case dash-joined spelling.
  assert D.normalize_name("cytochalasin D") == D.normalize_name("cytochalasin-d")
  assert D.normalize_name("MG-132") == D.normalize_name(" mg 132 ")
  assert D.normalize_name("AZ841") != D.normalize_name("AZ258")


def test_match_gives_rows_zeros_for_control_and_lists_missing():
  table = pd.DataFrame([[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]],
                       index=["taxol", "cytochalasin-d", "DMSO"])
  found, missing = D.match_descriptors(["Taxol", "cytochalasin D", "DMSO", "AZ-A"], table)
  np.testing.assert_array_equal(found["Taxol"], [1.0, 2.0])
  np.testing.assert_array_equal(found["cytochalasin D"], [3.0, 4.0])
  # The control is zeros by convention even though the table has a DMSO row.
  np.testing.assert_array_equal(found["DMSO"], [0.0, 0.0])
  assert missing == ["AZ-A"]


def test_read_table_errors_name_the_file(tmp_path):
  nan = tmp_path / "nan.csv"
  pd.DataFrame([[1.0, np.nan]], index=["taxol"]).to_csv(nan)
  with pytest.raises(ValueError, match=r"nan\.csv: NaN/inf in row\(s\) \['taxol'\]"):
    D.read_descriptor_table(nan)
  dup = tmp_path / "dup.csv"
  pd.DataFrame([[1.0], [2.0]], index=["MG-132", "mg132"]).to_csv(dup)
  with pytest.raises(ValueError, match="collide after name normalisation"):
    D.read_descriptor_table(dup)
  with pytest.raises(FileNotFoundError, match="absent.csv"):
    D.read_descriptor_table(tmp_path / "absent.csv")


def test_transforms():
  y = np.array([0.0, 1.0, 3.0], np.float32)
  np.testing.assert_allclose(D.transform_descriptors(y, "log1p"), np.log1p(y))
  np.testing.assert_array_equal(D.transform_descriptors(y, "binary"), [0, 1, 1])
  with pytest.raises(ValueError, match="Unknown descriptor transform 'sqrt'"):
    D.transform_descriptors(y, "sqrt")


def test_morgan_fingerprints_without_rdkit_says_how_to_fix():
  try:
    import rdkit  # noqa: F401
  except ImportError:
    with pytest.raises(ImportError, match="pip install rdkit"):
      D.morgan_fingerprints({"ethanol": "CCO"})
    return
  fp = D.morgan_fingerprints({"ethanol": "CCO", "benzene": "c1ccccc1"}, n_bits=64)
  assert fp.shape == (2, 64) and fp.loc["ethanol"].sum() > 0


def test_impa_fingerprints_cover_every_table3_compound(shared_data):
  table = D.read_descriptor_table(shared_data / "compound_embeddings/embeddings/csv/emb_fp.csv")
  assert table.shape == (35, 1024)
  found, missing = D.match_descriptors(list(COMPOUND_MOA), table)
  assert missing == [] and len(found) == 35
  assert found["DMSO"].sum() == 0 and found["taxol"].sum() > 0

"""Compound descriptor tables y_n for conditional flows on compound screens.

MixFlow conditions its base and velocity field on a perturbation descriptor
(MixFlow §5.3: "using only their chemical representations at test time");
for BBBC021 the usual choice is IMPA's Morgan fingerprints (`emb_fp.csv`,
1024 columns, one row per compound, Palma et al. 2025). This module reads
such tables, matches their rows to the compound names of a screen, and
optionally computes Morgan fingerprints from SMILES with RDKit.

Name matching: tables spell compounds differently (IMPA "cytochalasin D",
MorphoDiff "cytochalasin-d"), so names are compared after `normalize_name`
(lower case, every non-alphanumeric character dropped).

Control (DMSO): its descriptor is a vector of zeros by convention, meaning
"no perturbation", even when a table holds a fingerprint of the DMSO
molecule (IMPA's does). A linear reduction maps it to the image of zero.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

TRANSFORMS = ("none", "log1p", "binary")


def normalize_name(name: str) -> str:
  """Matching key of a compound name: lower case, alphanumerics only."""
  return re.sub(r"[^0-9a-z]", "", str(name).lower())


def read_descriptor_table(path: str | Path, *, index_col: str | int = 0) -> pd.DataFrame:
  """Reads a CSV with one row per compound (index) and numeric columns.

  Raises:
    ValueError: naming the file, if a column is not numeric, a value is not
      finite, or two rows have the same normalised name.
  """
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"descriptor table {path} does not exist.")
  table = pd.read_csv(path, index_col=index_col)
  bad_cols = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
  if bad_cols:
    raise ValueError(f"descriptor table {path}: non-numeric column(s) {bad_cols[:5]}.")
  values = table.to_numpy(np.float64)
  if not np.all(np.isfinite(values)):
    rows = table.index[~np.isfinite(values).all(1)].tolist()
    raise ValueError(f"descriptor table {path}: NaN/inf in row(s) {rows[:10]}.")
  keys = [normalize_name(n) for n in table.index]
  dup = sorted({k for k in keys if keys.count(k) > 1})
  if dup:
    raise ValueError(f"descriptor table {path}: rows collide after name normalisation: {dup}.")
  return table


def match_descriptors(compounds: Sequence[str], table: pd.DataFrame, *,
                      controls: Sequence[str] = ("DMSO",), source: str = "table"
                      ) -> tuple[dict[str, np.ndarray], list[str]]:
  """Looks up each compound's row; controls get zeros.

  Args:
    compounds: names as spelt in the screen.
    table: rows indexed by compound name (any spelling, see `normalize_name`).
    controls: names whose descriptor is zeros (need not be in the table).
    source: how to name the table in log messages.

  Returns:
    (descriptor per matched compound `[C]`, list of unmatched compounds).
  """
  rows = {normalize_name(n): i for i, n in enumerate(table.index)}
  values = table.to_numpy(np.float32)
  control_keys = {normalize_name(c) for c in controls}
  found, missing = {}, []
  for name in compounds:
    key = normalize_name(name)
    if key in control_keys:
      found[name] = np.zeros(values.shape[1], np.float32)
    elif key in rows:
      found[name] = values[rows[key]]
    else:
      missing.append(name)
  if missing:
    logging.warning("%s has no descriptor for %d compound(s): %s", source, len(missing), missing)
  return found, missing


def transform_descriptors(y: np.ndarray, transform: str) -> np.ndarray:
  """Elementwise transform of count fingerprints: none, log1p or binary."""
  if transform not in TRANSFORMS:
    raise ValueError(f"Unknown descriptor transform {transform!r}; valid: {TRANSFORMS}.")
  if transform == "log1p":
    if np.any(y < 0):
      raise ValueError("descriptor transform 'log1p' needs non-negative descriptors (counts).")
    return np.log1p(y)
  if transform == "binary":
    return (y > 0).astype(np.float32)
  return y


def morgan_fingerprints(smiles: Mapping[str, str], *, radius: int = 2,
                        n_bits: int = 1024) -> pd.DataFrame:
  """Morgan count fingerprints from SMILES (needs the optional `rdkit`).

  Args:
    smiles: compound name -> SMILES string.

  Returns:
    table `[len(smiles), n_bits]` indexed by compound name, usable with
    `match_descriptors`.
  """
  try:
    from rdkit import Chem  # pylint: disable=import-outside-toplevel
    from rdkit.Chem import rdFingerprintGenerator  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        "morgan_fingerprints needs RDKit: `pip install rdkit` (optional extra), or pass "
        "a precomputed descriptor table (e.g. IMPA's emb_fp.csv) instead.") from e
  gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
  rows, bad = {}, []
  for name, smi in smiles.items():
    mol = Chem.MolFromSmiles(smi) if isinstance(smi, str) else None
    if mol is None:
      bad.append(name)
      continue
    rows[name] = np.asarray(gen.GetCountFingerprintAsNumPy(mol), np.float32)
  if bad:
    raise ValueError(f"RDKit could not parse the SMILES of {bad}.")
  return pd.DataFrame.from_dict(rows, orient="index")

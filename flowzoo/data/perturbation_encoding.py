"""Perturbation conditions and their encoding Enc(c) (PRiMeFlow §3.1).

A condition c = ({p_k}, cov_c) is a set of single perturbations (none for a
control, two for a Norman "A+B" combination) in one covariate context (cell
line, dataset, ...) and optionally at one dose. PRiMeFlow encodes it as

    Enc(c) = [ sum_k OneHot(p_k) || OneHot(cov_c) ]                 (§3.1)

so a combination is the sum of its singles' codes (multi-hot) and an unseen
combination of seen singles is representable. We append OneHot(dose) when a
dose column is given. Instead of the multi-hot block, `gene_embeddings` puts
sum_k E[p_k] with E a table of gene embeddings (e.g. GenePT / ESM vectors,
the descriptors MixFlow §7 asks for), which can also represent a single never
perturbed in training, as long as the table has its row.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd


@dataclasses.dataclass(frozen=True)
class Condition:
  """One condition: perturbation label, its singles, covariate values and dose.

  Attributes:
    perturbation: the label as in the data, e.g. "KLF1+MAP2K6" or "control".
    singles: the single perturbations, () for a control, sorted as in the label.
    covariates: one value per covariate column (the order of `covariate_keys`).
    dose: dose label, "" without a dose column.
  """

  perturbation: str
  singles: tuple[str, ...]
  covariates: tuple[str, ...] = ()
  dose: str = ""

  @property
  def name(self) -> str:
    """Unique name: "pert|cov_1|...|dose" (just the perturbation without covariates)."""
    return "|".join([self.perturbation, *self.covariates] + ([self.dose] if self.dose else []))

  @property
  def is_control(self) -> bool:
    return not self.singles

  @property
  def is_combination(self) -> bool:
    return len(self.singles) > 1


def parse_perturbation(label: str, controls: Sequence[str], separator: str) -> tuple[str, ...]:
  """The singles of a perturbation label: () for a control value, ("A", "B") for "A+B".

  Raises:
    ValueError: for an empty label or an empty part ("A++B", "+A").
  """
  if label in controls:
    return ()
  parts = tuple(p.strip() for p in label.split(separator)) if separator else (label.strip(),)
  if not label or any(not p for p in parts):
    raise ValueError(f"perturbation label {label!r} has an empty part when split at "
                     f"{separator!r}; an empty condition cannot be encoded.")
  if len(set(parts)) != len(parts):
    raise ValueError(f"perturbation label {label!r} repeats a single perturbation.")
  return parts


def read_gene_embeddings(path: str | Path) -> pd.DataFrame:
  """A gene-embedding CSV: first column = gene name, the others numeric.

  Raises:
    FileNotFoundError, ValueError: missing file, non-numeric or non-finite
      values, duplicate gene names.
  """
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"gene embedding table {path} does not exist.")
  table = pd.read_csv(path, index_col=0)
  table.index = table.index.astype(str)
  bad = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
  if bad or table.shape[1] == 0:
    raise ValueError(f"gene embedding table {path}: needs numeric columns after the gene "
                     f"name column; non-numeric: {bad[:5]}.")
  if not np.all(np.isfinite(table.to_numpy(np.float64))):
    raise ValueError(f"gene embedding table {path} contains NaN/inf values.")
  dup = sorted(set(table.index[table.index.duplicated()]))
  if dup:
    raise ValueError(f"gene embedding table {path} lists gene(s) twice: {dup[:10]}.")
  return table


def embedding_rows(table: pd.DataFrame, genes: Sequence[str], source: str = "") -> np.ndarray:
  """Rows `[len(genes), E]` of `table` for `genes`; raises listing every missing gene."""
  missing = [g for g in genes if g not in table.index]
  if missing:
    hints = {g: difflib.get_close_matches(g, table.index, n=1) for g in missing[:10]}
    hint = "; close names: " + ", ".join(f"{g} -> {m[0]}" for g, m in hints.items() if m) \
        if any(hints.values()) else ""
    raise ValueError(f"gene embedding table {source} has no row for {len(missing)} perturbed "
                     f"gene(s): {missing[:20]}{' ...' if len(missing) > 20 else ''}{hint}.")
  return table.loc[list(genes)].to_numpy(np.float32)


@dataclasses.dataclass(frozen=True)
class ConditionEncoder:
  """Enc(c) for a fixed vocabulary (module docstring).

  Attributes:
    singles: the single perturbations, one multi-hot column each (sorted).
    covariates: per covariate column, its categories (sorted), one-hot.
    doses: dose categories (sorted), one-hot; () when there is no dose column.
    embeddings: `[len(singles), E]` gene embeddings replacing the multi-hot
      block, or None.
  """

  singles: tuple[str, ...]
  covariates: tuple[tuple[str, ...], ...] = ()
  doses: tuple[str, ...] = ()
  embeddings: np.ndarray | None = None

  @classmethod
  def fit(cls, conditions: Sequence[Condition], *, embedding_table: pd.DataFrame | None = None,
          embedding_source: str = "") -> "ConditionEncoder":
    """Vocabulary of every condition given (columns of conditions unseen in
    training are rejected later, by `check_representable`)."""
    singles = tuple(sorted({s for c in conditions for s in c.singles}))
    n_cov = len(conditions[0].covariates) if conditions else 0
    covs = tuple(tuple(sorted({c.covariates[j] for c in conditions})) for j in range(n_cov))
    doses = tuple(sorted({c.dose for c in conditions})) if any(c.dose for c in conditions) else ()
    emb = None if embedding_table is None else embedding_rows(embedding_table, singles,
                                                              embedding_source)
    return cls(singles, covs, doses, emb)

  @property
  def dim(self) -> int:
    head = len(self.singles) if self.embeddings is None else self.embeddings.shape[1]
    return head + sum(len(c) for c in self.covariates) + len(self.doses)

  def encode(self, cond: Condition) -> np.ndarray:
    """Enc(c) `[dim]` float32: (multi-hot or summed embeddings) || one-hot covariates || dose."""
    idx = [self.singles.index(s) for s in cond.singles]
    if self.embeddings is None:
      head = np.zeros(len(self.singles), np.float32)
      head[idx] = 1.0  # sum_k OneHot(p_k): the singles are distinct
    else:
      head = self.embeddings[idx].sum(0) if idx else np.zeros(self.embeddings.shape[1],
                                                             np.float32)
    parts = [head]
    for value, cats in zip(cond.covariates, self.covariates):
      parts.append((np.asarray(cats) == value).astype(np.float32))
    if self.doses:
      parts.append((np.asarray(self.doses) == cond.dose).astype(np.float32))
    return np.concatenate(parts).astype(np.float32)

  def encode_all(self, conditions: Sequence[Condition]) -> np.ndarray:
    """`[K, dim]` descriptors."""
    return np.stack([self.encode(c) for c in conditions])


def check_representable(conditions: Sequence[Condition], splits: Sequence[str], *,
                        uses_embeddings: bool, covariate_keys: Sequence[str] = ()) -> None:
  """Raises unless every evaluated condition's code uses only trained columns.

  A multi-hot column, covariate category or dose that no training condition
  has is never seen by the network: its weights stay at initialisation, and a
  prediction for it would be arbitrary. Gene embeddings represent any single
  in the table, so singles are then exempt.
  """
  train = [c for c, s in zip(conditions, splits) if s == "train"]
  seen = {s for c in train for s in c.singles}
  seen_cov = [{c.covariates[j] for c in train} for j in range(len(covariate_keys))]
  seen_dose = {c.dose for c in train}
  problems = []
  for c, s in zip(conditions, splits):
    if s == "train":
      continue
    unseen = [p for p in c.singles if p not in seen]
    if unseen and not uses_embeddings:
      problems.append(
          f"{s} condition {c.name!r}: single perturbation(s) {unseen} appear in no training "
          "condition, so the multi-hot encoding has no trained column for them (it cannot "
          "represent this condition; use gene_embeddings=<CSV> or keep them in training)")
    for j, key in enumerate(covariate_keys):
      if c.covariates[j] not in seen_cov[j]:
        problems.append(f"{s} condition {c.name!r}: {key}={c.covariates[j]!r} has no "
                        "training condition (its one-hot column would be untrained)")
    if c.dose not in seen_dose:
      problems.append(f"{s} condition {c.name!r}: dose {c.dose!r} has no training condition")
  if problems:
    raise ValueError("Held-out/validation conditions the encoding cannot represent:\n  "
                     + "\n  ".join(problems))


def covariate_dict(conditions: Sequence[Condition], covariate_keys: Sequence[str],
                   dose_key: str = "") -> Mapping[str, list[str]]:
  """`Populations.covariates`: perturbation, each covariate column and the dose per condition."""
  out = {"perturbation": [c.perturbation for c in conditions]}
  for j, key in enumerate(covariate_keys):
    out[key] = [c.covariates[j] for c in conditions]
  if dose_key:
    out[dose_key] = [c.dose for c in conditions]
  return out

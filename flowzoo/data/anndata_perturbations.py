"""Single-cell perturbation screens from AnnData as populations (PRiMeFlow §3, MixFlow §5.2).

One population per condition c = (perturbation, covariates[, dose]) of an
`.h5ad` file: the cells' expression (`X` or a layer; log1p-normalised in
PerturBench) in gene space, or in a PCA fitted on the TRAINING cells only
(PRiMeFlow's "FM PCA" ablation; a PCA that saw held-out cells would leak their
response directions). Descriptors are Enc(c) of
`flowzoo.data.perturbation_encoding` (multi-hot singles || one-hot covariates
[|| one-hot dose], or gene embeddings); splits are PerturBench's combination
or covariate-transfer tasks (`flowzoo.data.perturbation_splits`). Each
population's `sources` are the control cells of its own covariate context
(CellFlux-style empirical bases; the baselines use them too).

The default file is PerturBench's `devel.h5ad` (BSD-3-Clause), shipped in
`flowzoo/data/embedded/perturbench_devel/`: 5,961 cells x 500 genes, Norman19
K562 singles and two-gene combinations plus McFaline23 CRISPRi in three
glioblastoma lines.

Every argument is a plain value settable from a config: "" means "none" and
lists are tuples. `load` returns the richer `PerturbationData` (gene-space
cells, conditions, PCA) that evaluation and the h5ad writer need; the
registered dataset returns its `Populations`.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Sequence

import numpy as np

from flowzoo.data import h5ad
from flowzoo.data import perturbation_encoding as enc
from flowzoo.data import perturbation_splits as splits_lib
from flowzoo.data.populations import Populations
from flowzoo.registry import DATASETS

DEVEL_H5AD = Path(__file__).resolve().parent / "embedded" / "perturbench_devel" / "devel.h5ad"
NAME = "anndata_perturbations"


@dataclasses.dataclass(frozen=True)
class PerturbationData:
  """A loaded perturbation dataset (see `load`).

  Attributes:
    populations: what training sees (gene or PCA space).
    conditions: K `Condition`s, in the order of `populations.names`.
    genes: gene names `[G]`.
    gene_samples: K arrays `[n_k, G]` float32, the cells in gene space.
    control_index: `[K]` index of the control condition of each condition's
      covariate context (its own index for a control).
    pca: the scikit-learn PCA fitted on training cells, or None (gene space).
    encoder: the `ConditionEncoder` behind the descriptors.
    args: the loader's arguments (stored with generated cells).
  """

  populations: Populations
  conditions: tuple[enc.Condition, ...]
  genes: tuple[str, ...]
  gene_samples: tuple[np.ndarray, ...]
  control_index: tuple[int, ...]
  pca: object | None
  encoder: enc.ConditionEncoder
  args: dict

  def to_genes(self, x: np.ndarray) -> np.ndarray:
    """Model-space samples `[n, D]` -> gene space `[n, G]` (PCA inverse, or identity)."""
    x = np.asarray(x, np.float32)
    return x if self.pca is None else self.pca.inverse_transform(x).astype(np.float32)

  def index(self, name: str) -> int:
    return list(self.populations.names).index(name)


def _group_cells(labels: np.ndarray, covs: list[np.ndarray], doses: np.ndarray,
                 controls: Sequence[str], separator: str) -> dict[enc.Condition, np.ndarray]:
  """Rows of each condition, conditions sorted by (covariates, control first, name)."""
  rows: dict[tuple, list[int]] = {}
  for i, key in enumerate(zip(labels, *covs, doses)):
    rows.setdefault(key, []).append(i)
  groups = {}
  for key, idx in rows.items():
    label, cov, dose = str(key[0]), tuple(str(v) for v in key[1:-1]), str(key[-1])
    singles = enc.parse_perturbation(label, controls, separator)
    groups[enc.Condition(label, singles, cov, dose)] = np.asarray(idx)
  return dict(sorted(groups.items(), key=lambda kv: (kv[0].covariates, not kv[0].is_control,
                                                     kv[0].name)))


def _check_expression(x: np.ndarray, conditions, rows, source: str) -> None:
  bad = ~np.isfinite(x).all(1)
  if bad.any():
    where = [c.name for c, r in zip(conditions, rows) if bad[r].any()]
    raise ValueError(f"{source}: expression contains NaN/inf in {int(bad.sum())} cell(s), in "
                     f"condition(s) {where[:5]}; fix or filter them before training.")


def load(path: str = "", *, perturbation_key: str = "perturbation",
         controls: Sequence[str] = ("control",), separator: str = "+",
         covariate_keys: Sequence[str] = ("cell_type",), dose_key: str = "", layer: str = "",
         gene_embeddings: str = "", split: str = "combo", heldout: Sequence[str] = (),
         heldout_fraction: float = 0.3, num_validation: int = 1, split_seed: int = 0,
         pca_components: int = 0, min_cells: int = 2,
         control_sources: bool = True) -> PerturbationData:
  """Reads, validates, encodes and splits an AnnData perturbation screen.

  Args:
    path: an `.h5ad` file; "" = the embedded PerturBench devel file.
    perturbation_key: `obs` column with the perturbation label ("A", "A+B").
    controls: value(s) of that column marking control cells (not hard-coded).
    separator: joins the singles of a combination ("+"); "" = no combinations.
    covariate_keys: `obs` columns of the covariate context (cell line, dataset).
    dose_key: `obs` column with the dose, one-hot encoded; "" = none.
    layer: `layers` key with the expression; "" = `X`.
    gene_embeddings: CSV of gene embeddings replacing the multi-hot block; "" = multi-hot.
    split: "combo", "covariate" or "none" (`perturbation_splits.assign_splits`).
    heldout: condition names ("A+B|k562") or perturbation labels to hold out;
      () = a seeded draw of `heldout_fraction` of the eligible conditions.
    heldout_fraction, num_validation, split_seed: see `assign_splits`.
    pca_components: > 0 trains in the PCA space (fitted on training cells only).
    min_cells: every condition needs at least this many cells.
    control_sources: give each population its context's control cells as `sources`.
  Raises:
    ValueError / KeyError with the problem before anything is trained: missing
    columns or control values, NaN/inf expression, empty or tiny conditions,
    held-out conditions the split or the encoding cannot support, genes absent
    from the embedding table.
  """
  file = Path(path) if path else DEVEL_H5AD
  controls = tuple(controls)
  covariate_keys = tuple(covariate_keys)
  adata = h5ad.read(file)
  labels = h5ad.obs_labels(adata, perturbation_key)
  present = [c for c in controls if c in set(labels)]
  if not present:
    values = sorted(set(labels))
    raise ValueError(f"{file.name}: control value(s) {list(controls)} absent from "
                     f"obs[{perturbation_key!r}] ({len(values)} values, e.g. {values[:8]}).")
  covs = [h5ad.obs_labels(adata, k) for k in covariate_keys]
  doses = h5ad.obs_labels(adata, dose_key) if dose_key else np.full(len(labels), "")
  col = adata.obs[perturbation_key]
  empty = ([str(v) for v in col.cat.categories if not (col == v).any()]
           if hasattr(col, "cat") else [])

  # 1. Conditions, then validation of the cells.
  groups = _group_cells(labels, covs, doses, controls, separator)
  conditions, rows = list(groups), list(groups.values())
  small = [f"{c.name} ({len(r)})" for c, r in zip(conditions, rows) if len(r) < min_cells]
  if small:
    raise ValueError(f"{file.name}: {len(small)} condition(s) have fewer than min_cells="
                     f"{min_cells} cells: {small[:10]}; filter them or lower min_cells.")
  x = h5ad.matrix(adata, layer=layer, dtype=np.float32)
  _check_expression(x, conditions, rows, file.name)
  control_of = {}
  for i, c in enumerate(conditions):
    if c.is_control:
      control_of.setdefault(c.covariates, i)  # several doses of control: the first
  lacking = sorted({c.covariates for c in conditions} - set(control_of))
  if lacking:
    raise ValueError(f"{file.name}: covariate context(s) {lacking} of {covariate_keys} have no "
                     f"control cells ({list(controls)}); every context needs its controls.")

  # 2. Splits and encoding (fails on held-out conditions it cannot represent).
  labels_split = splits_lib.assign_splits(
      conditions, task=split, heldout=tuple(heldout), heldout_fraction=heldout_fraction,
      num_validation=num_validation, seed=split_seed, empty=empty)
  table = enc.read_gene_embeddings(gene_embeddings) if gene_embeddings else None
  encoder = enc.ConditionEncoder.fit(conditions, embedding_table=table,
                                     embedding_source=gene_embeddings)
  enc.check_representable(conditions, labels_split, uses_embeddings=table is not None,
                          covariate_keys=covariate_keys)

  # 3. Cells in model space: genes, or a PCA fitted on training cells only.
  gene_samples = tuple(x[r] for r in rows)
  pca, samples = None, list(gene_samples)
  if pca_components:
    from sklearn.decomposition import PCA  # pylint: disable=import-outside-toplevel
    train = np.concatenate([s for s, lab in zip(gene_samples, labels_split) if lab == "train"])
    if not 1 <= pca_components <= min(train.shape):
      raise ValueError(f"pca_components={pca_components} must be in [1, {min(train.shape)}] "
                       "(training cells x genes).")
    pca = PCA(n_components=pca_components, random_state=0).fit(train)
    samples = [pca.transform(s).astype(np.float32) for s in gene_samples]
  control_index = tuple(control_of[c.covariates] for c in conditions)
  sources = [samples[k] for k in control_index] if control_sources else None
  space = (f"PCA({pca_components}, {pca.explained_variance_ratio_.sum():.1%} of train variance)"
           if pca is not None else f"{x.shape[1]} genes")
  info = (f"{file.name}: {len(conditions)} conditions ({labels_split.count('heldout')} held out, "
          f"{labels_split.count('validation')} validation; split {split!r}), {space}, "
          f"descriptor {'gene embeddings' if table is not None else 'multi-hot'} + one-hot "
          f"{list(covariate_keys)}{' + dose' if dose_key else ''} (dim {encoder.dim}).")
  pops = Populations(
      names=[c.name for c in conditions], samples=samples,
      descriptors=encoder.encode_all(conditions), splits=labels_split,
      covariates=enc.covariate_dict(conditions, covariate_keys, dose_key), sources=sources,
      info=info)
  args = dict(path=str(file), perturbation_key=perturbation_key, controls=controls,
              separator=separator, covariate_keys=covariate_keys, dose_key=dose_key,
              layer=layer, gene_embeddings=gene_embeddings, split=split, heldout=tuple(heldout),
              heldout_fraction=heldout_fraction, num_validation=num_validation,
              split_seed=split_seed, pca_components=pca_components, min_cells=min_cells,
              control_sources=control_sources)
  return PerturbationData(pops, tuple(conditions), tuple(map(str, adata.var_names)),
                          gene_samples, control_index, pca, encoder, args)


def _hashable(kwargs: dict) -> tuple:
  return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))


@functools.lru_cache(maxsize=2)
def _load_cached(key: tuple) -> PerturbationData:
  return load(**dict(key))


def load_cached(**kwargs) -> PerturbationData:
  """`load` memoised on its arguments (lists count as tuples): the run and its
  evaluation share one copy (tests of bad input call `load` directly)."""
  return _load_cached(_hashable(kwargs))


@DATASETS.register(NAME)
def anndata_perturbations(path: str = "", *, perturbation_key: str = "perturbation",
                          controls: Sequence[str] = ("control",), separator: str = "+",
                          covariate_keys: Sequence[str] = ("cell_type",), dose_key: str = "",
                          layer: str = "", gene_embeddings: str = "", split: str = "combo",
                          heldout: Sequence[str] = (), heldout_fraction: float = 0.3,
                          num_validation: int = 1, split_seed: int = 0,
                          pca_components: int = 0, min_cells: int = 2,
                          control_sources: bool = True) -> Populations:
  """Populations of an AnnData perturbation screen; arguments as `load`."""
  return load_cached(**{k: v for k, v in locals().items()}).populations

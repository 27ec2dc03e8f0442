"""BBBC021 compound screen as populations: real-data loaders, splits, PCA.

MixFlow §5.3 (Table 4) trains on a subset of BBBC021 compounds and predicts
the morphology of held-out compounds from their chemical descriptors alone.
Here one *population* is the set of profiles observed under one compound
(or one compound at one dose); its descriptor is the compound's row in a
descriptor table (`flowzoo.data.descriptors`); DMSO is the control, with a
zero descriptor, and control profiles of the same plates are the
population's `sources` (CellFlux's batch-matched initial state).

Loaders (both registered in `DATASETS`):
  * `bbbc021_wells`: well-level CellProfiler profiles, e.g. the Broad
    `BBBC021_feature_selected_mad_robustize.csv` (632 wells x 189 features;
    metadata columns `Metadata_{Plate,Well,Compound,Concentration,moa}`).
  * `bbbc021_cells`: per-cell embeddings (npz, h5ad via h5py, parquet, csv)
    with per-cell compound / dose / plate / MoA columns.

Named held-out splits: CellFlux's 8 compounds (Zhang et al. 2025, App. H,
Table 4) and IMPA's 10 (Palma et al. 2025, `bbbc021_all.yaml`), embedded below
and optionally re-read from the original config files (`splits_dir`); seeded
random splits hold out a fraction of the treated compounds.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from flowzoo.data import descriptors as desc_lib
from flowzoo.data.populations import Populations
from flowzoo.registry import DATASETS

# ood_set of CellFlux configs/bbbc021_all.yaml (commit 3256adc).
CELLFLUX_HELDOUT = ("docetaxel", "AZ841", "cytochalasin D", "simvastatin", "cyclohexamide",
                    "latrunculin B", "epothilone B", "lactacystin")
# ood_set of IMPA config_hydra/config/bbbc021_all.yaml (commit 13eb82f).
IMPA_HELDOUT = ("taxol", "ALLN", "bryostatin", "simvastatin", "MG-132", "methotrexate",
                "colchicine", "cytochalasin B", "AZ258", "cisplatin")
NAMED_HELDOUT = {"cellflux": CELLFLUX_HELDOUT, "impa": IMPA_HELDOUT}
SPLIT_FILES = {"cellflux": "cellflux/bbbc021_all.yaml", "impa": "impa/bbbc021_all.yaml"}
GROUPINGS = ("compound", "compound_dose")
CONTROLS = ("DMSO",)


def read_heldout_list(name: str, splits_dir: str | Path) -> tuple[str, ...]:
  """The `ood_set` of a named split's original config file under `splits_dir`."""
  import yaml  # pylint: disable=import-outside-toplevel

  if name not in SPLIT_FILES:
    raise ValueError(f"No split file for {name!r}; named splits: {sorted(SPLIT_FILES)}.")
  path = Path(splits_dir) / SPLIT_FILES[name]
  with open(path) as f:
    ood = yaml.safe_load(f).get("ood_set")
  if not ood:
    raise ValueError(f"{path} has no ood_set list.")
  return tuple(str(c) for c in ood)


def assign_splits(compounds: Sequence[str], split: str | Sequence[str] = "cellflux", *,
                  heldout_fraction: float = 0.3, num_validation: int = 0, seed: int = 0,
                  splits_dir: str | Path | None = None,
                  controls: Sequence[str] = CONTROLS) -> dict[str, str]:
  """Split label ("train" / "validation" / "heldout") of every compound.

  Args:
    compounds: the screen's compound names (controls included).
    split: "cellflux" or "impa" (named held-out lists), "random" (a seeded
      `heldout_fraction` of the treated compounds), "none", or an explicit
      list of held-out compounds, as a sequence or as one string separated
      by ";" (the config field is a string, so that is the command-line form:
      `--config.dataset.split='taxol;AZ138'`; ";" because chemical names
      contain commas).
    num_validation: train compounds moved to "validation" (seeded), e.g. for
      checkpoint selection without looking at the held-out compounds.
    splits_dir: if set, named lists are read from the original config files
      there instead of the embedded constants.
    controls: always "train" (the control is observed in every setting).
  """
  ctrl = {desc_lib.normalize_name(c) for c in controls}
  treated = sorted((c for c in set(compounds) if desc_lib.normalize_name(c) not in ctrl),
                   key=desc_lib.normalize_name)
  by_key = {desc_lib.normalize_name(c): c for c in treated}
  if isinstance(split, str) and split in NAMED_HELDOUT:
    wanted = read_heldout_list(split, splits_dir) if splits_dir else NAMED_HELDOUT[split]
  elif isinstance(split, str) and split == "random":
    if not 0.0 < heldout_fraction < 1.0:
      raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}.")
    n_held = max(1, int(round(heldout_fraction * len(treated))))
    wanted = list(np.random.default_rng([seed, 0]).choice(treated, n_held, replace=False))
  elif isinstance(split, str) and split == "none":
    wanted = []
  elif isinstance(split, str) and ";" in split:
    wanted = [c.strip() for c in split.split(";") if c.strip()]
  elif isinstance(split, str):
    raise ValueError(f"Unknown split {split!r}; use one of {sorted(NAMED_HELDOUT)}, "
                     "'random', 'none', or a list of held-out compounds (a sequence, or one "
                     "string separated by ';').")
  else:
    wanted = list(split)
  unknown = [c for c in wanted if desc_lib.normalize_name(c) not in by_key]
  if unknown:
    raise ValueError(f"Split {split if isinstance(split, str) else 'list'!r} names compound(s) "
                     f"{unknown} that are not treated compounds of this dataset; known: {treated}.")
  held = {by_key[desc_lib.normalize_name(c)] for c in wanted}
  rest = [c for c in treated if c not in held]
  if not 0 <= num_validation < len(rest):
    raise ValueError(f"num_validation={num_validation} must be in [0, {len(rest)}) "
                     f"(train compounds left after holding out {len(held)}).")
  val = set(np.random.default_rng([seed, 1]).choice(rest, num_validation, replace=False).tolist())
  return {c: "heldout" if c in held else "validation" if c in val else "train"
          for c in compounds}


@dataclasses.dataclass(frozen=True)
class PCA:
  """A linear projection `(x - mean) @ components.T` to k dimensions."""

  mean: np.ndarray  # [D]
  components: np.ndarray  # [k, D], orthonormal rows
  explained_variance_ratio: np.ndarray  # [k]

  def __call__(self, x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, np.float64) - self.mean) @ self.components.T).astype(np.float32)


def fit_pca(x: np.ndarray, k: int) -> PCA:
  """Principal components of `x` `[N, D]` via SVD (deterministic, no sklearn)."""
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  if not 1 <= k <= min(x.shape):
    raise ValueError(f"PCA to k={k} components needs 1 <= k <= min(N={x.shape[0]}, "
                     f"D={x.shape[1]}) of the fitting data.")
  mean = x.mean(0)
  _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
  var = s**2
  return PCA(mean, vt[:k], var[:k] / max(var.sum(), 1e-30))


def reduce_populations(pops: Populations, k: int) -> Populations:
  """Projects samples and sources to k principal components of the TRAIN samples.

  Fitting on train conditions only keeps the held-out compounds' profiles out
  of the representation: a PCA that saw them would already encode their
  response directions, leaking test information into training (MixFlow
  Fig. 3b varies this k from 50 to 500).
  """
  if len(pops.event_shape) != 1:
    raise ValueError(f"PCA needs vector samples, got event shape {pops.event_shape}.")
  train = pops.split_ids("train")
  pca = fit_pca(np.concatenate([pops.samples[i] for i in train]), k)
  sources = None if pops.sources is None else [pca(s) for s in pops.sources]
  return dataclasses.replace(
      pops, samples=[pca(s) for s in pops.samples], sources=sources,
      info=f"{pops.info} PCA to {k} components fitted on train conditions "
           f"({pca.explained_variance_ratio.sum():.1%} of train variance).")


def populations_from_rows(features: np.ndarray, meta: pd.DataFrame, *, source: str,
                          descriptors: str | pd.DataFrame | None,
                          compound_key: str, dose_key: str | None, plate_key: str | None,
                          moa_key: str | None, group_by: str = "compound",
                          append_log_dose: bool | None = None,
                          descriptor_transform: str = "none",
                          descriptor_components: int | None = None,
                          missing_descriptors: str = "drop", include_control: bool = True,
                          control_sources: bool = True, split="cellflux",
                          heldout_fraction: float = 0.3, num_validation: int = 0,
                          split_seed: int = 0, splits_dir: str | None = None,
                          pca_components: int | None = None,
                          controls: Sequence[str] = CONTROLS) -> Populations:
  """Groups profile rows (wells or cells) into populations.

  Args:
    features: `[N, D]` one profile per row of `meta`.
    meta: N rows with the columns named by the `*_key` arguments.
    source: file name used in error messages.
    descriptors: a descriptor CSV path, a table indexed by compound, or
      "onehot" (cannot generalise to held-out compounds: a baseline only).
    group_by: "compound" pools all doses (BBBC021 wells: 2-21 wells per
      compound, but mostly 3 per (compound, dose)); "compound_dose" makes one
      population per (compound, dose).
    append_log_dose: appends log(1 + dose) to the descriptor (dose 0 -> 0 for
      the control); default: on exactly when grouping by dose.
    descriptor_components: PCA of descriptors fitted on train compounds.
    missing_descriptors: "drop" compounds without a descriptor (warned and
      listed in `info`) or "error".
    include_control: adds the control (all control rows) as a train
      population with a zero descriptor.
    control_sources: gives every population the control rows of its own
      plates as `sources` (all control rows if its plates have none).
    pca_components: reduces features with `reduce_populations`.
  """
  if group_by not in GROUPINGS:
    raise ValueError(f"group_by must be one of {GROUPINGS}, got {group_by!r}.")
  if append_log_dose is None:
    append_log_dose = group_by == "compound_dose"
  if append_log_dose and group_by != "compound_dose":
    raise ValueError("append_log_dose needs group_by='compound_dose' (pooled doses have no one dose).")
  if missing_descriptors not in ("drop", "error"):
    raise ValueError(f"missing_descriptors must be 'drop' or 'error', got {missing_descriptors!r}.")
  needed = [compound_key] + [k for k in (plate_key, moa_key) if k]
  if group_by == "compound_dose" or append_log_dose:
    needed.append(dose_key)
  absent = [k for k in needed if k is None or k not in meta.columns]
  if absent:
    raise KeyError(f"{source}: missing metadata column(s) {absent}; "
                   f"available: {list(meta.columns)[:20]}.")
  features = np.asarray(features, np.float32)
  bad = ~np.isfinite(features).all(1)
  if bad.any():
    rows = np.flatnonzero(bad)
    raise ValueError(f"{source}: features contain NaN/inf in {rows.size} row(s), e.g. rows "
                     f"{rows[:5].tolist()} (compounds {meta[compound_key].iloc[rows[:5]].tolist()}).")
  meta = meta.reset_index(drop=True)
  compound = meta[compound_key].astype(str).to_numpy()
  ctrl_keys = {desc_lib.normalize_name(c) for c in controls}
  is_ctrl = np.array([desc_lib.normalize_name(c) in ctrl_keys for c in compound])
  names = sorted(set(compound), key=desc_lib.normalize_name)

  # 1. Descriptors per compound; drop or refuse compounds the table lacks.
  if isinstance(descriptors, str) and descriptors == "onehot":
    table = pd.DataFrame(np.eye(len(names)), index=names)
  elif descriptors is None or (isinstance(descriptors, str) and not descriptors):
    raise ValueError(f"{source}: pass descriptors=<CSV indexed by compound, e.g. IMPA's "
                     "emb_fp.csv> or descriptors='onehot'.")
  elif isinstance(descriptors, pd.DataFrame):
    table = descriptors
  else:
    table = desc_lib.read_descriptor_table(descriptors)
  found, missing = desc_lib.match_descriptors(names, table, controls=controls, source=str(descriptors))
  if missing and missing_descriptors == "error":
    raise ValueError(f"{source}: no descriptor for compound(s) {missing} in {descriptors}.")
  keep = np.array([c in found for c in compound])
  names = [c for c in names if c in found]
  try:
    labels = assign_splits(names, split, heldout_fraction=heldout_fraction,
                           num_validation=num_validation, seed=split_seed,
                           splits_dir=splits_dir, controls=controls)
  except ValueError as e:
    if not missing:
      raise
    # A held-out compound that the descriptor table lacks was dropped above.
    raise ValueError(f"{e} Dropped earlier for having no descriptor in {descriptors}: "
                     f"{missing}.") from e
  y_of = {c: desc_lib.transform_descriptors(found[c], descriptor_transform) for c in names}
  if descriptor_components:
    pca = fit_pca(np.stack([y_of[c] for c in names if labels[c] == "train"]), descriptor_components)
    y_of = {c: pca(y[None])[0] for c, y in y_of.items()}

  # 2. Groups: one per compound (or compound and dose); controls pooled.
  dose = meta[dose_key].to_numpy(np.float64) if dose_key in meta.columns else np.zeros(len(meta))
  key = [(c, None if (is_ctrl[i] or group_by == "compound") else float(dose[i]))
         for i, c in enumerate(compound)]
  groups: dict = {}
  for i in np.flatnonzero(keep & (include_control | ~is_ctrl)):
    groups.setdefault(key[i], []).append(i)
  plates = meta[plate_key].astype(str).to_numpy() if plate_key else np.zeros(len(meta), str)
  ctrl_rows = np.flatnonzero(is_ctrl)
  if control_sources and ctrl_rows.size == 0:
    raise ValueError(f"{source}: control_sources=True but no {list(controls)} rows.")
  out = dict(names=[], samples=[], descriptors=[], splits=[], sources=[])
  cov = dict(compound=[], moa=[], dose=[], plates=[])
  for (c, d), rows in sorted(groups.items(), key=lambda kv: (desc_lib.normalize_name(kv[0][0]),
                                                              kv[0][1] or 0.0)):
    rows = np.asarray(rows)
    y = y_of[c]
    if append_log_dose:
      y = np.append(y, np.float32(np.log1p(d or 0.0)))
    out["names"].append(c if d is None else f"{c}@{d:g}")
    out["samples"].append(features[rows])
    out["descriptors"].append(y)
    out["splits"].append(labels[c])
    if control_sources:
      same = ctrl_rows[np.isin(plates[ctrl_rows], plates[rows])]
      out["sources"].append(features[same if same.size else ctrl_rows])
    cov["compound"].append(c)
    cov["moa"].append("/".join(sorted(set(map(str, meta[moa_key].iloc[rows])))) if moa_key else "")
    cov["dose"].append(float(d) if d is not None else float("nan"))
    cov["plates"].append(",".join(sorted(set(plates[rows]))))
  info = (f"BBBC021 populations from {source}: {len(out['names'])} conditions grouped by "
          f"{group_by}, descriptors {descriptors}, split {split!r}.")
  if missing:
    info += f" Dropped (no descriptor): {missing}."
  pops = Populations(names=out["names"], samples=out["samples"],
                     descriptors=np.stack(out["descriptors"]), splits=out["splits"],
                     covariates=cov, sources=out["sources"] if control_sources else None,
                     info=info)
  return reduce_populations(pops, pca_components) if pca_components else pops


@DATASETS.register("bbbc021_wells")
def bbbc021_wells(path: str = "", descriptors: str = "", split="cellflux", *,
                  group_by: str = "compound", append_log_dose: bool | None = None,
                  descriptor_transform: str = "none", descriptor_components: int | None = None,
                  missing_descriptors: str = "drop", include_control: bool = True,
                  control_sources: bool = True, heldout_fraction: float = 0.3,
                  num_validation: int = 0, split_seed: int = 0, splits_dir: str | None = None,
                  pca_components: int | None = None, plate_key: str = "Metadata_Plate",
                  compound_key: str = "Metadata_Compound",
                  dose_key: str = "Metadata_Concentration", moa_key: str = "Metadata_moa",
                  metadata_prefix: str = "Metadata_") -> Populations:
  """Well-level profiles (one row per well) -> populations per compound.

  Args:
    path: CSV such as `bbbc021_wells/BBBC021_feature_selected_mad_robustize.csv`;
      every column not starting with `metadata_prefix` is a feature.
    descriptors: descriptor CSV (e.g. `compound_embeddings/.../emb_fp.csv`).
    Others: see `populations_from_rows`. With the Broad CSV and IMPA's
      emb_fp.csv, AZ-A, AZ-C, AZ-J and AZ-U have no fingerprint and are
      dropped (listed in `info`), leaving 34 treated compounds + DMSO.
  """
  if not path:
    raise ValueError("bbbc021_wells needs path=<well profile CSV>, e.g. "
                     "../shared/data/bbbc021_wells/BBBC021_feature_selected_mad_robustize.csv.")
  table = pd.read_csv(path)
  feats = [c for c in table.columns if not str(c).startswith(metadata_prefix)]
  nonnum = [c for c in feats if not pd.api.types.is_numeric_dtype(table[c])]
  if nonnum:
    raise ValueError(f"{path}: non-numeric feature column(s) {nonnum[:5]}.")
  return populations_from_rows(
      table[feats].to_numpy(np.float32), table.drop(columns=feats), source=str(path),
      **_common(locals()))


def _common(args: dict) -> dict:
  """The loader arguments `populations_from_rows` takes (all but file handling)."""
  keys = ("descriptors", "split", "group_by", "append_log_dose", "descriptor_transform",
          "descriptor_components", "missing_descriptors", "include_control", "control_sources",
          "heldout_fraction", "num_validation", "split_seed", "splits_dir", "pca_components",
          "plate_key", "compound_key", "dose_key", "moa_key")
  return {k: args[k] for k in keys}


def read_cell_table(path: str | Path, *, features_key: str = "X",
                    obsm_key: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
  """Per-cell features `[N, D]` and metadata from npz, h5ad (h5py), parquet or csv.

  npz: array `features_key` plus 1-D arrays of length N (the columns).
  h5ad: dense or CSR `X` (or `obsm/<obsm_key>`), columns from `obs` (plain
  or categorical anndata encodings), read with h5py (no anndata needed).
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
    import h5py  # pylint: disable=import-outside-toplevel
    with h5py.File(path, "r") as f:
      node = f["obsm"][obsm_key] if obsm_key else f["X"]
      if isinstance(node, h5py.Group):  # CSR sparse matrix.
        from scipy import sparse  # pylint: disable=import-outside-toplevel
        shape = tuple(node.attrs["shape"])
        x = sparse.csr_matrix((node["data"][:], node["indices"][:], node["indptr"][:]),
                              shape=shape).toarray()
      else:
        x = node[:]
      cols = {}
      for name, col in f["obs"].items():
        if isinstance(col, h5py.Group) and "codes" in col:
          cats = np.array([_decode(v) for v in col["categories"][:]], dtype=object)
          cols[name] = cats[col["codes"][:]]
        elif isinstance(col, h5py.Dataset) and col.ndim == 1 and name != "_index":
          cols[name] = np.array([_decode(v) for v in col[:]], dtype=object)
    return x, pd.DataFrame(cols).infer_objects()
  if suffix in (".parquet", ".csv"):
    table = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    feats = [c for c in table.columns if str(c).startswith(features_key)
             and pd.api.types.is_numeric_dtype(table[c])]
    if not feats:
      raise KeyError(f"{path}: no numeric feature columns starting with {features_key!r}.")
    return table[feats].to_numpy(np.float32), table.drop(columns=feats)
  raise ValueError(f"{path}: unsupported format {suffix!r}; use .npz, .h5ad, .parquet or .csv.")


def _decode(v):
  return v.decode() if isinstance(v, bytes) else v


@DATASETS.register("bbbc021_cells")
def bbbc021_cells(path: str = "", descriptors: str = "", split="cellflux", *,
                  group_by: str = "compound_dose", append_log_dose: bool | None = None,
                  descriptor_transform: str = "none", descriptor_components: int | None = None,
                  missing_descriptors: str = "drop", include_control: bool = True,
                  control_sources: bool = True, heldout_fraction: float = 0.3,
                  num_validation: int = 0, split_seed: int = 0, splits_dir: str | None = None,
                  pca_components: int | None = None, plate_key: str | None = "plate",
                  compound_key: str = "compound", dose_key: str = "dose",
                  moa_key: str | None = "moa", features_key: str = "X",
                  obsm_key: str | None = None) -> Populations:
  """Per-cell embeddings (e.g. DINOv2 of crops, MixFlow §5.3) -> populations.

  One population per (compound, dose) by default (full BBBC021 has hundreds
  of cells per condition); DMSO cells are the control. See `read_cell_table`
  for formats and `populations_from_rows` for the other arguments.
  """
  if not path:
    raise ValueError("bbbc021_cells needs path=<npz/h5ad/parquet/csv of per-cell embeddings>.")
  x, meta = read_cell_table(path, features_key=features_key, obsm_key=obsm_key)
  return populations_from_rows(x, meta, source=str(path), **_common(locals()))

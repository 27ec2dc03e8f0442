"""BBBC021 compound screen as populations: the real-data loaders.

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

Named held-out splits live in `flowzoo.data.splits`, PCA in
`flowzoo.data.pca`, file readers in `flowzoo.data.tables`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from flowzoo.data import descriptors as desc_lib
from flowzoo.data.pca import fit_pca, reduce_populations
from flowzoo.data.populations import Populations
from flowzoo.data.splits import CONTROLS, assign_splits
from flowzoo.data.tables import read_cell_table
from flowzoo.registry import DATASETS

GROUPINGS = ("compound", "compound_dose")


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
                     info=info, titles=[f"{n} ({m})" if m else n
                                        for n, m in zip(out["names"], cov["moa"])])
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

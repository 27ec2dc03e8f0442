"""BBBC021 compound screen as populations: the real-data loaders.

MixFlow §5.3 (Table 4) trains on a subset of BBBC021 compounds and predicts
the morphology of held-out compounds from their chemical descriptors alone.
Here one *population* is the set of profiles observed under one compound
(or one compound at one dose); its descriptor is the compound's row in a
descriptor table (`flowzoo.data.descriptors`); DMSO is the control, with a
zero descriptor, and control profiles of the same plates are the
population's `sources` (CellFlux's batch-matched initial state).

Loaders (both registered in `DATASETS`):
  * `bbbc021_wells`: well-level CellProfiler profiles. Default: the Broad
    `BBBC021_feature_selected_mad_robustize.csv` (632 wells x 189 features;
    metadata columns `Metadata_{Plate,Well,Compound,Concentration,moa}`) and
    MorphoDiff's RDKit descriptors, both shipped in `embedded/bbbc021/`
    (licences and SOURCE.txt beside them), so the main job needs no file
    outside the package.
  * `bbbc021_cells`: per-cell embeddings (npz, h5ad via anndata, parquet, csv)
    with per-cell compound / dose / plate / MoA columns.

Named held-out splits live in `flowzoo.data.splits`, PCA in
`flowzoo.data.pca`, file readers in `flowzoo.data.tables`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import logging

import numpy as np
import pandas as pd

from flowzoo.data import descriptors as desc_lib
from flowzoo.data.pca import fit_pca, reduce_populations
from flowzoo.data.populations import PAIRINGS, Populations
from flowzoo.data.splits import CONTROLS, assign_splits
from flowzoo.data.tables import read_cell_table
from flowzoo.registry import DATASETS

GROUPINGS = ("compound", "compound_dose")
STANDARDIZE = ("none", "plate_controls")
EMBEDDED = Path(__file__).resolve().parent / "embedded" / "bbbc021"
WELLS_CSV = EMBEDDED / "wells_mad_robustize.csv.gz"
DESCRIPTORS_CSV = EMBEDDED / "descriptors_morphodiff.csv.gz"
# Features at unit scale (z-scores against controls) have |x| of a few units;
# the MMD bandwidths and the N(0, I) source noise assume that scale.
UNSCALED_STD = 20.0


def standardize_by_plate_controls(features: np.ndarray, plates: np.ndarray,
                                  is_ctrl: np.ndarray, *, source: str) -> np.ndarray:
  """Robust z-score of every row against its plate's control rows.

  x' = (x - median_ctrl(plate)) / (1.4826 * MAD_ctrl(plate)), per feature (the
  pycytominer `mad_robustize` normalisation against DMSO). A feature with zero
  MAD on a plate is divided by 1 there (it is constant on that plate's controls).

  Args:
    features: `[N, D]`; plates, is_ctrl: `[N]`.
  """
  out = np.empty_like(features, dtype=np.float32)
  for plate in np.unique(plates):
    rows = plates == plate
    ctrl = features[rows & is_ctrl]
    if len(ctrl) == 0:
      raise ValueError(f"{source}: standardize='plate_controls' but plate {plate!r} has no "
                       "control rows to standardise against.")
    med = np.median(ctrl, 0)
    mad = 1.4826 * np.median(np.abs(ctrl - med), 0)
    out[rows] = (features[rows] - med) / np.where(mad > 0, mad, 1.0)
  return out


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
                          controls: Sequence[str] = CONTROLS, pairing: str = "same_plate",
                          standardize: str = "none") -> Populations:
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
    control_sources: gives every population control rows as `sources`.
    pairing: how a row's source is drawn (`populations.PAIRINGS`):
      "same_plate" (CellFlux: a control of the target row's own plate; the
      sources are the controls of the population's plates), "other_plates"
      (CellFlux Table 2d's batch ablation: a control of any other plate; the
      sources are all control rows) or "pooled" (any control of the
      population's plates, all controls if its plates have none).
    standardize: "none", or "plate_controls" (`standardize_by_plate_controls`,
      for profiles not yet normalised against their plate's controls).
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
  if pairing not in PAIRINGS:
    raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}.")
  if standardize not in STANDARDIZE:
    raise ValueError(f"standardize must be one of {STANDARDIZE}, got {standardize!r}.")
  if (pairing != "pooled" or standardize != "none") and not plate_key:
    raise ValueError(f"pairing={pairing!r} / standardize={standardize!r} need plate_key "
                     "(the metadata column naming each row's plate).")
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
  plates = meta[plate_key].astype(str).to_numpy() if plate_key else np.zeros(len(meta), str)
  if standardize == "plate_controls":
    features = standardize_by_plate_controls(features, plates, is_ctrl, source=source)
  spread = float(np.max(features.std(0))) if len(features) > 1 else 0.0
  if spread > UNSCALED_STD:
    logging.warning("%s: a feature has standard deviation %.3g: the features look unscaled, "
                    "but the MMD bandwidths and source noise assume unit scale. Use "
                    "standardize='plate_controls' (robust z-score against each plate's "
                    "controls) or standardise the file.", source, spread)

  # 1. Descriptors per compound; drop or refuse compounds the table lacks.
  if isinstance(descriptors, str) and descriptors == "onehot":
    table = pd.DataFrame(np.eye(len(names)), index=names)
  elif descriptors is None or (isinstance(descriptors, str) and not descriptors):
    raise ValueError(f"{source}: pass descriptors=<CSV indexed by compound, e.g. IMPA's "
                     "emb_fp.csv> or descriptors='onehot'.")
  elif isinstance(descriptors, pd.DataFrame):
    table = descriptors
    descriptors = "the given descriptor table"  # how messages name it
  else:
    table = desc_lib.read_descriptor_table(descriptors)
  found, missing = desc_lib.match_descriptors(names, table, controls=controls, source=str(descriptors))
  treated_found = [c for c in found if desc_lib.normalize_name(c) not in ctrl_keys]
  if not treated_found:
    raise ValueError(
        f"{source}: no treated compound matches a row of the descriptor table {descriptors} "
        f"(names compared lower case, alphanumerics only). Compounds, e.g. "
        f"{[c for c in names if desc_lib.normalize_name(c) not in ctrl_keys][:5]}; table rows, "
        f"e.g. {list(map(str, table.index[:5]))}.")
  zero = [c for c in treated_found if not np.any(found[c])]
  if zero:
    logging.warning("%s: compound(s) %s have an all-zero descriptor row in %s, the control's "
                    "descriptor: the model cannot tell them from the control.",
                    source, zero, descriptors)
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
  ctrl_rows = np.flatnonzero(is_ctrl)
  if control_sources and ctrl_rows.size == 0:
    raise ValueError(f"{source}: control_sources=True but no {list(controls)} rows.")
  out = dict(names=[], samples=[], descriptors=[], splits=[], sources=[], sample_plates=[],
             source_plates=[])
  cov = dict(compound=[], moa=[], dose=[], plates=[], control=[])
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
      src = ctrl_rows if pairing == "other_plates" or not same.size else same
      out["sources"].append(features[src])
      out["source_plates"].append(plates[src])
      out["sample_plates"].append(plates[rows])
    cov["compound"].append(c)
    cov["control"].append(desc_lib.normalize_name(c) in ctrl_keys)
    cov["moa"].append("/".join(sorted(set(map(str, meta[moa_key].iloc[rows])))) if moa_key else "")
    cov["dose"].append(float(d) if d is not None else float("nan"))
    cov["plates"].append(",".join(sorted(set(plates[rows]))))
  held = [c for c in names if labels[c] == "heldout"]
  info = (f"populations from {source}: {len(out['names'])} conditions grouped by "
          f"{group_by}, descriptors {descriptors}, split {split!r} holding out {held}"
          f"{' (fixed by dataset.split_seed)' if split == 'random' else ''}, "
          f"{pairing if control_sources else 'no'} control pairing.")
  if missing:
    info += f" Dropped (no descriptor): {missing}."
  pops = Populations(names=out["names"], samples=out["samples"],
                     descriptors=np.stack(out["descriptors"]), splits=out["splits"],
                     covariates=cov, sources=out["sources"] if control_sources else None,
                     sample_plates=out["sample_plates"] if control_sources else None,
                     source_plates=out["source_plates"] if control_sources else None,
                     pairing=pairing if control_sources else "pooled", info=info,
                     titles=[f"{n} ({m})" if m else n for n, m in zip(out["names"], cov["moa"])])
  return reduce_populations(pops, pca_components) if pca_components else pops


@DATASETS.register("bbbc021_wells")
def bbbc021_wells(path: str = "", descriptors: str = "", split: str = "impa", *,
                  group_by: str = "compound", append_log_dose: bool | None = None,
                  descriptor_transform: str = "none", descriptor_components: int | None = None,
                  missing_descriptors: str = "drop", include_control: bool = True,
                  control_sources: bool = True, heldout_fraction: float = 0.3,
                  num_validation: int = 0, split_seed: int = 0, splits_dir: str | None = None,
                  pca_components: int | None = None, plate_key: str = "Metadata_Plate",
                  compound_key: str = "Metadata_Compound",
                  dose_key: str = "Metadata_Concentration", moa_key: str = "Metadata_moa",
                  metadata_prefix: str = "Metadata_", control_value: str = "DMSO",
                  pairing: str = "same_plate", standardize: str = "none") -> Populations:
  """Well-level profiles (one row per well) -> populations per compound.

  Args:
    path: CSV (optionally .gz); every column not starting with
      `metadata_prefix` is a feature. Default "": the shipped Broad
      `BBBC021_feature_selected_mad_robustize.csv` (`WELLS_CSV`).
    descriptors: descriptor CSV indexed by compound. Default "": the shipped
      MorphoDiff RDKit descriptors (`DESCRIPTORS_CSV`, 173 columns), which
      cover 34 of the 38 treated compounds: AZ-A, AZ-C, AZ-J and AZ-U have
      no SMILES in BBBC021 and are dropped (listed in `info` and the log).
    split: "impa" (MixFlow §5.3's held-out list) by default; see
      `splits.assign_splits`.
    control_value: the compound value(s) of control rows (";"-separated).
    Others: see `populations_from_rows`.
  """
  path = path or str(WELLS_CSV)
  descriptors = descriptors or str(DESCRIPTORS_CSV)
  if not Path(path).is_file():
    # errno + filename: build_dataset names the config field from `filename`.
    raise FileNotFoundError(2, "bbbc021_wells: no well profile file", path)
  if Path(path).stat().st_size == 0:
    raise ValueError(f"{path} is empty (0 bytes): expected a CSV of well profiles.")
  table = pd.read_csv(path)
  if table.empty:  # pandas reads a header-only file as 0 rows, not as an error
    raise ValueError(f"{path} has a header but no rows: no well profiles to load.")
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
          "plate_key", "compound_key", "dose_key", "moa_key", "pairing", "standardize")
  controls = tuple(c.strip() for c in args["control_value"].split(";") if c.strip())
  if not controls:
    raise ValueError("control_value names no control (e.g. 'DMSO', or 'DMSO;vehicle').")
  return dict({k: args[k] for k in keys}, controls=controls)


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
                  obsm_key: str | None = None, control_value: str = "DMSO",
                  pairing: str = "same_plate", standardize: str = "none") -> Populations:
  """Per-cell embeddings (e.g. DINOv2 of crops, MixFlow §5.3) -> populations.

  One population per (compound, dose) by default (full BBBC021 has hundreds
  of cells per condition); DMSO cells are the control. See `read_cell_table`
  for formats and `populations_from_rows` for the other arguments.
  """
  if not path:
    raise ValueError("bbbc021_cells needs path=<npz/h5ad/parquet/csv of per-cell embeddings>.")
  x, meta = read_cell_table(path, features_key=features_key, obsm_key=obsm_key)
  return populations_from_rows(x, meta, source=str(path), **_common(locals()))

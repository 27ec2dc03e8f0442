"""Single-cell crop datasets in the IMPA / CellFlux layout: the index.

CellFlux (§3-4, Algorithm 1, App. C) learns a flow from control crops of a
plate to the crops of cells perturbed on that plate. The data is one `.npy`
crop `[H, W, C]` per cell and an index CSV with one row per crop:

  path      crop file, relative to the CSV's folder (absolute paths work too)
  plate     the batch the cell was imaged in (controls are paired per plate)
  well      well label (optional; kept for traceability)
  compound  perturbation; rows whose compound is `control` are controls
  dose      numeric dose (unit: `dose_unit`, µM by default)
  moa       mechanism of action (optional)
  split     "train" / "val" / "test" (optional; otherwise a seeded split)

`read_crops_index(csv)` reads and validates it, cheaply and before anything
heavy: every file must exist, and all crops must have one shape and dtype,
read from the `.npy` headers only. `columns=` maps these fields to other
column names; the defaults also read the BBBC021 crops of `../shared/data`
(`dose <- concentration_uM`, `moa <- moa_folder`) as they are.

Conditions are the (compound, dose) pairs of the treated rows, named
"cyclohexamide@15uM". Without a split column, `test_fraction` of the cells of
each condition is held out (seeded), and `control_test_fraction` of each
plate's controls too: the held-out controls are what the "control as
prediction" baseline is scored with, so that baseline never sees the control
cells the model was paired with in training (and the model's sources are all
training controls).

NaN / inf can only be found by reading the pixels: `load_crop` checks every
crop it reads (the dataset writer reads each once) and names the row.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

FIELDS = ("path", "plate", "well", "compound", "dose", "moa", "split")
REQUIRED = ("path", "plate", "compound", "dose")
# Column names tried, in order, for a field the caller does not map.
DEFAULT_COLUMNS = {
    "path": ("path",),
    "plate": ("plate",),
    "well": ("well",),
    "compound": ("compound",),
    "dose": ("dose", "concentration_uM"),
    "moa": ("moa", "moa_folder"),
    "split": ("split",),
}
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class CropsIndex:
  """A validated crop index.

  Attributes:
    csv: the index file.
    table: one row per crop with columns `path` (absolute), `plate`, `well`,
      `compound`, `dose` (float), `moa`, `split`, `is_control` (bool),
      `condition` (int index into `conditions`, -1 for controls) and `row`
      (the data row of the CSV, 0-based; CSV line = row + 2).
    conditions: K readable names, "compound@dose<unit>".
    condition_compounds, condition_doses: the K (compound, dose) pairs.
    compounds: the treated compounds, sorted (the descriptor vocabulary).
    plates: the plates, sorted.
    image_shape: `(H, W, C)` of every crop.
    dtype: the crops' dtype (numpy name).
    control: the control compound.
  """

  csv: Path
  table: pd.DataFrame
  conditions: tuple[str, ...]
  condition_compounds: tuple[str, ...]
  condition_doses: tuple[float, ...]
  compounds: tuple[str, ...]
  plates: tuple[str, ...]
  image_shape: tuple[int, int, int]
  dtype: str
  control: str

  def split_rows(self, split: str, *, controls: bool) -> pd.DataFrame:
    """Rows of `split`: the treated cells, or (controls=True) the controls."""
    t = self.table
    return t[(t["split"] == split) & (t["is_control"] == controls)]

  def fingerprint(self) -> str:
    """Hash of the CSV's bytes, the resolved table, and every file's size and mtime.

    Cheap (stat, not read): rewriting a crop changes its mtime and so the
    fingerprint, so a dataset built from it is rebuilt.
    """
    h = hashlib.sha256(self.csv.read_bytes())
    h.update(pd.util.hash_pandas_object(self.table, index=False).values.tobytes())
    for p in self.table["path"].drop_duplicates():
      st = Path(p).stat()
      h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def condition_name(compound: str, dose: float, unit: str = "uM") -> str:
  return f"{compound}@{dose:g}{unit}"


def read_crops_index(csv: str | Path, *, columns: Mapping[str, str] | None = None,
                     control: str = "DMSO", dose_unit: str = "uM", test_fraction: float = 0.2,
                     control_test_fraction: float = 0.2, seed: int = 0) -> CropsIndex:
  """Reads and validates a crop index CSV (module docstring).

  Args:
    csv: the index file; crop paths are relative to its folder.
    columns: field -> CSV column, for fields named otherwise (fields: `FIELDS`).
    control: the control compound.
    dose_unit: written into the condition names.
    test_fraction: fraction of each condition's cells held out (no split column).
    control_test_fraction: fraction of each plate's controls held out.
    seed: seed of that split.

  Raises:
    ValueError / FileNotFoundError naming the row, file or column at fault.
  """
  csv = Path(csv).resolve()
  if not csv.is_file():
    raise FileNotFoundError(f"crop index {csv} does not exist.")
  raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
  t = _select_columns(raw, csv, columns or {})
  t["dose"] = _parse_doses(t["dose"], csv)
  t["path"] = [str((csv.parent / p).resolve()) if p else "" for p in t["path"]]
  t["row"] = np.arange(len(t))
  if len(t) == 0:
    raise ValueError(f"{csv}: the index has no rows.")
  t["is_control"] = t["compound"] == control
  _check_plates(t, csv, control)
  t["split"] = (_check_splits(t["split"], csv) if "split" in t.columns
                else _seeded_split(t, test_fraction, control_test_fraction, seed))
  _check_split_contents(t, csv, control)
  _check_files(t, csv)
  shape, dtype = _check_shapes(t, csv)

  treated = t[~t["is_control"]]
  pairs = sorted({(c, float(d)) for c, d in zip(treated["compound"], treated["dose"])})
  ids = {p: k for k, p in enumerate(pairs)}
  t["condition"] = [-1 if ctl else ids[(c, float(d))]
                    for ctl, c, d in zip(t["is_control"], t["compound"], t["dose"])]
  return CropsIndex(
      csv=csv, table=t.reset_index(drop=True),
      conditions=tuple(condition_name(c, d, dose_unit) for c, d in pairs),
      condition_compounds=tuple(c for c, _ in pairs),
      condition_doses=tuple(d for _, d in pairs),
      compounds=tuple(sorted({c for c, _ in pairs})),
      plates=tuple(sorted(set(t["plate"]))),
      image_shape=shape, dtype=dtype, control=control)


def load_crop(path: str, *, row: int | None = None) -> np.ndarray:
  """Reads one crop `[H, W, C]`; raises naming the row if it holds NaN / inf."""
  x = np.load(path, allow_pickle=False)
  if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
    bad = int(np.size(x) - np.isfinite(x).sum())
    where = f"row {row} " if row is not None else ""
    raise ValueError(f"crop {where}({path}) has {bad} NaN/inf value(s).")
  return x


def _select_columns(raw: pd.DataFrame, csv: Path, columns: Mapping[str, str]) -> pd.DataFrame:
  unknown = sorted(set(columns) - set(FIELDS))
  if unknown:
    raise ValueError(f"columns= maps unknown field(s) {unknown}; valid fields: {list(FIELDS)}.")
  missing_cols = sorted(c for c in columns.values() if c not in raw.columns)
  if missing_cols:
    raise ValueError(f"{csv}: column(s) {missing_cols} given in columns= are not in the CSV; "
                     f"its columns: {list(raw.columns)}.")
  out = {}
  for field in FIELDS:
    name = columns.get(field) or next((c for c in DEFAULT_COLUMNS[field] if c in raw.columns), None)
    if name is None:
      if field in REQUIRED:
        raise ValueError(
            f"{csv}: no column for {field!r} (tried {list(DEFAULT_COLUMNS[field])}); its columns: "
            f"{list(raw.columns)}. Map one with columns={{{field!r}: '<column>'}}.")
      continue
    out[field] = raw[name].astype(str).str.strip()
  t = pd.DataFrame(out)
  for optional in ("well", "moa"):
    if optional not in t.columns:
      t[optional] = ""
  return t


def _parse_doses(doses: pd.Series, csv: Path) -> np.ndarray:
  values = pd.to_numeric(doses, errors="coerce").to_numpy(np.float64)
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    i = int(bad[0])
    raise ValueError(f"{csv}: row {i} (line {i + 2}) has a non-numeric dose {doses.iloc[i]!r} "
                     f"({bad.size} such row(s)).")
  if (values < 0).any():
    i = int(np.flatnonzero(values < 0)[0])
    raise ValueError(f"{csv}: row {i} (line {i + 2}) has a negative dose {values[i]}.")
  return values


def _check_plates(t: pd.DataFrame, csv: Path, control: str) -> None:
  if not t["is_control"].any():
    raise ValueError(f"{csv}: no control rows (compound == {control!r}); pass control=<name>. "
                     f"Compounds: {sorted(set(t['compound']))[:10]}.")
  if t["is_control"].all():
    raise ValueError(f"{csv}: every row is a control ({control!r}); nothing to predict.")
  with_controls = set(t.loc[t["is_control"], "plate"])
  for plate, n in t.loc[~t["is_control"], "plate"].value_counts().sort_index().items():
    if plate not in with_controls:
      raise ValueError(f"{csv}: plate {plate!r} has {n} treated cells but no controls "
                       f"({control!r}), so they cannot be paired with same-plate controls.")


def _check_splits(splits: pd.Series, csv: Path) -> pd.Series:
  bad = sorted(set(splits) - set(SPLITS))
  if bad:
    i = int(np.flatnonzero(~splits.isin(SPLITS))[0])
    raise ValueError(f"{csv}: unknown split label(s) {bad} (first at row {i}); "
                     f"valid: {list(SPLITS)}.")
  return splits


def _held_out(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
  """Mask of the `round(fraction * n)` held-out items; keeps at least one in training."""
  k = min(int(round(fraction * n)), n - 1)
  mask = np.zeros(n, bool)
  mask[rng.permutation(n)[:max(k, 0)]] = True
  return mask


def _seeded_split(t: pd.DataFrame, test_fraction: float, control_test_fraction: float,
                  seed: int) -> np.ndarray:
  for name, f in (("test_fraction", test_fraction), ("control_test_fraction", control_test_fraction)):
    if not 0.0 <= f < 1.0:
      raise ValueError(f"{name} must be in [0, 1), got {f}.")
  split = np.full(len(t), "train", dtype=object)
  # One generator per group, seeded by its key: a group's split does not
  # change when other conditions are added to or removed from the CSV.
  groups = [(("treated", c, f"{d:g}"), test_fraction)
            for (c, d), _ in t[~t["is_control"]].groupby(["compound", "dose"])]
  groups += [(("control", p), control_test_fraction)
             for p in sorted(set(t.loc[t["is_control"], "plate"]))]
  for key, f in groups:
    if key[0] == "treated":
      rows = np.flatnonzero(~t["is_control"] & (t["compound"] == key[1])
                            & (t["dose"].map(lambda d: f"{d:g}") == key[2]))
    else:
      rows = np.flatnonzero(t["is_control"] & (t["plate"] == key[1]))
    digest = hashlib.sha256(repr((seed, key)).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    split[rows[_held_out(len(rows), f, rng)]] = "test"
  if test_fraction > 0 and not (split[~t["is_control"].to_numpy()] == "test").any():
    raise ValueError(f"test_fraction={test_fraction} holds out no treated cell (every condition "
                     "has too few cells); the 'test' split would be empty.")
  return split


def _check_split_contents(t: pd.DataFrame, csv: Path, control: str) -> None:
  for s in sorted(set(t["split"])):
    n_treated = int(((t["split"] == s) & ~t["is_control"]).sum())
    if n_treated == 0:
      raise ValueError(f"{csv}: split {s!r} has no treated cells (only controls): an empty split.")
  train = t[t["split"] == "train"]
  if not (~train["is_control"]).any():
    raise ValueError(f"{csv}: the 'train' split has no treated cells: an empty split.")
  with_controls = set(train.loc[train["is_control"], "plate"])
  for plate in sorted(set(train.loc[~train["is_control"], "plate"])):
    if plate not in with_controls:
      raise ValueError(f"{csv}: plate {plate!r} has treated training cells but no training "
                       f"controls ({control!r}) to pair them with.")


def _check_files(t: pd.DataFrame, csv: Path) -> None:
  for row, p in zip(t["row"], t["path"]):
    if not p or not Path(p).is_file():
      raise FileNotFoundError(f"{csv}: row {row} (line {row + 2}) names crop {p!r}, "
                              "which does not exist.")


def npy_header(path: str) -> tuple[tuple[int, ...], np.dtype]:
  """Shape and dtype of a `.npy` file, from its header alone."""
  with open(path, "rb") as f:
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read(f)
  return tuple(shape), np.dtype(dtype)


def _check_shapes(t: pd.DataFrame, csv: Path) -> tuple[tuple[int, int, int], str]:
  first = None
  for row, p in zip(t["row"], t["path"]):
    shape, dtype = npy_header(p)
    if first is None:
      first = (row, p, shape, dtype)
      if len(shape) != 3:
        raise ValueError(f"{csv}: crop {p} (row {row}) has shape {shape}; crops must be [H, W, C].")
      if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"{csv}: crop {p} (row {row}) has dtype {dtype}; need integers or floats.")
    elif shape != first[2] or dtype != first[3]:
      raise ValueError(
          f"{csv}: crops of mixed shapes/dtypes: {first[1]} (row {first[0]}) is {first[2]} "
          f"{first[3]}, {p} (row {row}) is {shape} {dtype}. Crop or resize them to one shape.")
  return tuple(first[2]), first[3].name


def log_dose(doses) -> np.ndarray:
  """The dose feature of a condition descriptor: log(1 + dose), defined at dose 0."""
  return np.log1p(np.asarray(doses, np.float64)).astype(np.float32)


def descriptors(compounds, doses, vocabulary) -> np.ndarray:
  """Condition descriptors `[K, V + 1]`: one-hot compound over `vocabulary`, then log(1 + dose)."""
  index = {c: i for i, c in enumerate(vocabulary)}
  out = np.zeros((len(compounds), len(vocabulary) + 1), np.float32)
  for k, c in enumerate(compounds):
    out[k, index[c]] = 1.0
  out[:, -1] = log_dose(doses)
  return out


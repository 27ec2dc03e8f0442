"""Crop datasets as TFDS array_record datasets, written and read without TensorFlow.

Converts a crop index (`flowzoo.data.crops_index`) once into a TFDS dataset
that training reads by random access (`tfds.builder_from_directory(path)
.as_data_source(split)`), so the crops never have to fit in memory:

    path = build_crops_dataset("crops_index.csv", "~/tensorflow_datasets", image_size=32)
    python -m flowzoo.data.crops_tfds --index=crops_index.csv --data_dir=DIR [--image_size=32]

The dataset lands in `<data_dir>/flowzoo_crops/<name>/1.0.0/` (`name`: the
CSV's folder name plus the size). Splits: `train`, `test` (and `val` if the
CSV has it) hold the treated cells; `control_train`, `control_test`, ...
the controls of the same split, written sorted by plate so a plate's
controls are one contiguous block (`metadata["control_plate_ranges"]`).

Records: `image` `[H, W, C]` (a `tfds.features.Tensor` stored as raw bytes:
the `Image` feature needs TensorFlow to encode numpy arrays), `plate` (int,
index into `metadata["plates"]`), `condition` (int, -1 for controls),
`compound`, `dose`, `moa`, `well`, `split` and `row` (the CSV row).

Decisions:
  * Storage dtype: uint8 / uint16 crops are stored as they are (a resize is
    rounded back): raw 16-bit microscopy intensities keep their range at half
    the bytes of float32; any other dtype is stored as float32.
  * Resize: `skimage.transform.resize(order=1, anti_aliasing=True)`, a
    well-kept numpy resizer that low-pass filters before downsampling
    (68 -> 32 px would alias thin tubulin/actin fibres otherwise) and runs in
    the writer's loop with no device dispatch or per-shape compile
    (`jax.image.resize` would need both).
  * Normalisation statistics: per-channel percentiles (0.1 and 99.9 by
    default) of the stored training crops (treated and control), from a
    seeded subsample of at most `stats_crops` crops x `stats_pixels` pixels,
    so memory stays flat in the dataset size. They, the condition / plate /
    compound vocabularies and a fingerprint of the inputs live in the
    dataset's `tfds.core.MetadataDict` (`metadata.json`, restored by
    `builder_from_directory`).
  * Reuse: a dataset whose stored fingerprint (CSV bytes, resolved table,
    each crop file's size and mtime, the options, `FORMAT_VERSION`) matches
    is returned as is; any other is deleted and rebuilt.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from flowzoo.data.crops_index import CropsIndex, load_crop, read_crops_index

BUILDER_NAME = "flowzoo_crops"
VERSION = "1.0.0"
FORMAT_VERSION = 1  # bump when the record layout or metadata changes: forces a rebuild
EXTRA = "flowzoo[images]"


def import_tfds():
  """tensorflow_datasets, or an error naming the extra that installs it."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"crop datasets need tensorflow-datasets: pip install '{EXTRA}'.") from e
  return tfds


def storage_dtype(dtype: str) -> np.dtype:
  dtype = np.dtype(dtype)
  return dtype if dtype in (np.uint8, np.uint16) else np.dtype(np.float32)


def prepare_crop(x: np.ndarray, image_size: int | None, dtype: np.dtype) -> np.ndarray:
  """One crop as stored: resized to `[image_size, image_size, C]` if asked, in `dtype`."""
  if image_size is not None and x.shape[:2] != (image_size, image_size):
    from skimage.transform import resize  # pylint: disable=import-outside-toplevel
    x = resize(x.astype(np.float64), (image_size, image_size, x.shape[2]), order=1,
               anti_aliasing=True, preserve_range=True)
    if np.issubdtype(dtype, np.integer):
      info = np.iinfo(dtype)
      x = np.clip(np.rint(x), info.min, info.max)
  return x.astype(dtype)


def dataset_path(data_dir: str | Path, name: str) -> Path:
  return Path(data_dir).expanduser().resolve() / BUILDER_NAME / name / VERSION


def default_name(index: CropsIndex, image_size: int | None) -> str:
  base = re.sub(r"[^0-9a-zA-Z]+", "_", index.csv.parent.name).strip("_").lower() or "crops"
  return f"{base}_{image_size}px" if image_size else f"{base}_native"


def build_crops_dataset(index_csv: str | Path, data_dir: str | Path, *,
                        image_size: int | None = None, name: str | None = None,
                        columns: Mapping[str, str] | None = None, control: str = "DMSO",
                        dose_unit: str = "uM", test_fraction: float = 0.2,
                        control_test_fraction: float = 0.2, seed: int = 0,
                        percentiles: tuple[float, float] = (0.1, 99.9), stats_crops: int = 2048,
                        stats_pixels: int = 1024, force: bool = False) -> Path:
  """Reads, validates and writes a crop index as a TFDS dataset; returns its folder.

  Args:
    index_csv, columns, control, dose_unit, test_fraction,
      control_test_fraction, seed: as in `read_crops_index`.
    data_dir: TFDS data dir; the dataset goes to `dataset_path(data_dir, name)`.
    image_size: resize crops to `[image_size, image_size, C]` (None: keep).
    name: dataset (builder config) name; default `default_name(...)`.
    percentiles: the per-channel (low, high) percentiles stored for [-1, 1]
      normalisation.
    stats_crops, stats_pixels: subsample sizes of those statistics.
    force: rebuild even if an identical dataset exists.
  """
  index = read_crops_index(index_csv, columns=columns, control=control, dose_unit=dose_unit,
                           test_fraction=test_fraction,
                           control_test_fraction=control_test_fraction, seed=seed)
  return write_crops_dataset(index, data_dir, image_size=image_size, name=name,
                             percentiles=percentiles, stats_crops=stats_crops,
                             stats_pixels=stats_pixels, seed=seed, force=force)


def write_crops_dataset(index: CropsIndex, data_dir: str | Path, *, image_size: int | None = None,
                        name: str | None = None, percentiles: tuple[float, float] = (0.1, 99.9),
                        stats_crops: int = 2048, stats_pixels: int = 1024, seed: int = 0,
                        force: bool = False) -> Path:
  """Writes a validated `CropsIndex` (see `build_crops_dataset`); returns its folder."""
  tfds = import_tfds()
  if image_size is not None and image_size < 1:
    raise ValueError(f"image_size must be positive, got {image_size}.")
  lo_q, hi_q = percentiles
  if not 0.0 <= lo_q < hi_q <= 100.0:
    raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
  name = name or default_name(index, image_size)
  if not re.fullmatch(r"[a-zA-Z0-9_]+", name):
    raise ValueError(f"dataset name {name!r}: use letters, digits and '_' only.")
  options = dict(image_size=image_size, percentiles=list(percentiles), stats_crops=stats_crops,
                 stats_pixels=stats_pixels, seed=seed, format=FORMAT_VERSION)
  fingerprint = hashlib.sha256(
      (index.fingerprint() + json.dumps(options, sort_keys=True)).encode()).hexdigest()
  path = dataset_path(data_dir, name)
  if path.is_dir():
    if not force and _stored_fingerprint(path) == fingerprint:
      return path
    if not (path / "dataset_info.json").is_file():
      raise FileExistsError(f"{path} exists but is not a TFDS dataset; not deleting it.")
    shutil.rmtree(path)

  dtype = storage_dtype(index.dtype)
  h, w, c = index.image_shape
  shape = (image_size, image_size, c) if image_size else (h, w, c)
  lo, hi, n_stats = _percentile_stats(index, image_size, dtype, percentiles, stats_crops,
                                      stats_pixels, seed)
  splits = _split_tables(index)
  metadata = {
      "format": FORMAT_VERSION, "fingerprint": fingerprint, "source_csv": str(index.csv),
      "control": index.control, "image_shape": list(shape), "dtype": dtype.name,
      "source_shape": list(index.image_shape), "source_dtype": index.dtype,
      "resize": ("skimage.transform.resize(order=1, anti_aliasing=True)"
                 if image_size and shape != index.image_shape else None),
      "conditions": list(index.conditions), "compounds": list(index.compounds),
      "condition_compounds": list(index.condition_compounds),
      "condition_doses": list(index.condition_doses), "plates": list(index.plates),
      "normalisation": {"percentiles": [lo_q, hi_q], "low": lo, "high": hi, "crops": n_stats},
      "splits": {s: len(t) for s, t in splits.items()},
      # Cells per plate in each split: lets a reader check pairing up front.
      "plate_counts": {s: [int((t["plate"] == p).sum()) for p in index.plates]
                       for s, t in splits.items()},
      "control_plate_ranges": {s: _plate_ranges(t, index.plates) for s, t in splits.items()
                               if s.startswith("control_")},
  }
  builder = _builder_class()(
      splits=splits, plates=index.plates, image_size=image_size, image_shape=shape, dtype=dtype,
      metadata=metadata, data_dir=str(Path(data_dir).expanduser().resolve()),
      config=tfds.core.BuilderConfig(name=name, description=f"crops of {index.csv}"),
      file_format="array_record")
  # One line instead of TFDS's per-split progress bars (carriage returns fill run logs).
  print(f"writing {sum(len(t) for t in splits.values())} crops {'x'.join(map(str, shape))} to "
        f"{path} (once; later runs reuse it)", flush=True)
  tfds.display_progress_bar(False)
  try:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig())
  finally:
    tfds.display_progress_bar(True)
  assert Path(builder.data_dir) == path, (builder.data_dir, path)
  return path


def read_metadata(path: str | Path) -> dict[str, Any]:
  """The dataset's metadata dict (vocabularies, normalisation, splits, ...)."""
  return dict(open_builder(path).info.metadata)


def open_builder(path: str | Path):
  """A read-only TFDS builder of a written dataset (no TensorFlow needed)."""
  path = Path(path)
  if not (path / "dataset_info.json").is_file():
    raise FileNotFoundError(f"{path} is not a crops dataset (no dataset_info.json); "
                            "write one with build_crops_dataset.")
  return import_tfds().builder_from_directory(str(path))


def _stored_fingerprint(path: Path) -> str | None:
  try:
    return json.loads((path / "metadata.json").read_text()).get("fingerprint")
  except (OSError, ValueError):
    return None


def _split_tables(index: CropsIndex):
  """TFDS split name -> rows, controls sorted by plate (contiguous plate blocks)."""
  out = {}
  for s in sorted(set(index.table["split"])):
    out[s] = index.split_rows(s, controls=False)
    controls = index.split_rows(s, controls=True)
    if len(controls):
      out[f"control_{s}"] = controls.sort_values(["plate", "row"], kind="stable")
  return out


def _plate_ranges(rows, plates: Sequence[str]) -> list[list[int]]:
  """[start, count] of each plate's block in a plate-sorted split (count 0: none)."""
  labels = rows["plate"].to_numpy()
  return [[int(np.searchsorted(labels, p, "left")),
           int(np.searchsorted(labels, p, "right") - np.searchsorted(labels, p, "left"))]
          for p in plates]


def _percentile_stats(index: CropsIndex, image_size, dtype, percentiles, stats_crops,
                      stats_pixels, seed) -> tuple[list[float], list[float], int]:
  rows = index.table[index.table["split"] == "train"]
  rng = np.random.default_rng(seed)
  take = np.sort(rng.choice(len(rows), size=min(stats_crops, len(rows)), replace=False))
  values = []
  for path, row in zip(rows["path"].to_numpy()[take], rows["row"].to_numpy()[take]):
    x = prepare_crop(load_crop(path, row=int(row)), image_size, dtype)
    pixels = x.reshape(-1, x.shape[-1])
    if len(pixels) > stats_pixels:
      pixels = pixels[rng.choice(len(pixels), stats_pixels, replace=False)]
    values.append(pixels.astype(np.float32))
  lo, hi = np.percentile(np.concatenate(values), percentiles, axis=0)
  flat = np.flatnonzero(hi <= lo)
  if flat.size:
    raise ValueError(f"channel(s) {flat.tolist()} of the training crops are constant between "
                     f"the {percentiles} percentiles ({lo[flat]}); cannot normalise them.")
  return lo.astype(float).tolist(), hi.astype(float).tolist(), len(take)


@functools.cache
def _builder_class():
  tfds = import_tfds()

  class FlowzooCrops(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes the splits of a crop index (module docstring); read with `open_builder`."""

    VERSION = tfds.core.Version(VERSION)
    # Nothing is downloaded, so there is no checksums file to find next to
    # this module; tfds's search for one fails on editable installs (it
    # wants the `importlib_resources` backport).
    code_path = None

    def __init__(self, *, splits, plates, image_size, image_shape, dtype, metadata, **kwargs):
      self._splits, self._image_size, self._dtype = splits, image_size, dtype
      self._shape, self._metadata = tuple(image_shape), metadata
      self._plate_ids = {p: i for i, p in enumerate(plates)}
      super().__init__(**kwargs)

    def _info(self):
      features = tfds.features.FeaturesDict({
          "image": tfds.features.Tensor(shape=self._shape, dtype=self._dtype, encoding="bytes"),
          "plate": np.int32, "condition": np.int32, "dose": np.float32, "row": np.int64,
          "compound": tfds.features.Text(), "moa": tfds.features.Text(),
          "well": tfds.features.Text(), "split": tfds.features.Text(),
      })
      # Built from code, not from a dataset folder with README/citation files
      # (`dataset_info_from_configs` would look for those next to this module).
      return tfds.core.DatasetInfo(
          builder=self, description="Single-cell crops (flowzoo.data.crops_tfds).",
          features=features, metadata=tfds.core.MetadataDict(self._metadata),
          disable_shuffling=True)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {s: self._generate_examples(rows) for s, rows in self._splits.items()}

    def _generate_examples(self, rows):
      # Integer keys in order: with disable_shuffling the records keep this
      # order, which keeps each plate's controls contiguous.
      cols = ("path", "row", "plate", "condition", "dose", "compound", "moa", "well", "split")
      for key, (path, row, plate, cond, dose, compound, moa, well, split) in enumerate(
          zip(*(rows[c].to_numpy() for c in cols))):
        yield key, {
            "image": prepare_crop(load_crop(path, row=int(row)), self._image_size, self._dtype),
            "plate": self._plate_ids[plate], "condition": int(cond), "dose": float(dose),
            "row": int(row), "compound": compound, "moa": moa, "well": well, "split": split}

  return FlowzooCrops


def main(argv: Sequence[str] | None = None) -> Path:
  p = argparse.ArgumentParser(description="Convert a crop index CSV into a TFDS dataset.")
  p.add_argument("--index", required=True, help="index CSV (paths relative to its folder)")
  p.add_argument("--data_dir", required=True, help="TFDS data dir to write into")
  p.add_argument("--image_size", type=int, default=None, help="resize to SIZE x SIZE")
  p.add_argument("--name", default=None, help="dataset name (default: folder + size)")
  p.add_argument("--control", default="DMSO")
  p.add_argument("--test_fraction", type=float, default=0.2)
  p.add_argument("--control_test_fraction", type=float, default=0.2)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--column", action="append", default=[], metavar="FIELD=COLUMN",
                 help="map a field to a CSV column, e.g. --column dose=conc (repeatable)")
  p.add_argument("--force", action="store_true", help="rebuild even if up to date")
  a = p.parse_args(argv)
  columns = {}
  for item in a.column:
    if "=" not in item:
      p.error(f"--column {item!r}: expected FIELD=COLUMN.")
    field, column = item.split("=", 1)
    columns[field] = column
  path = build_crops_dataset(a.index, a.data_dir, image_size=a.image_size, name=a.name,
                             columns=columns, control=a.control, test_fraction=a.test_fraction,
                             control_test_fraction=a.control_test_fraction, seed=a.seed,
                             force=a.force)
  meta = read_metadata(path)
  print(f"{path}\n  splits {meta['splits']}\n  conditions {meta['conditions']}\n"
        f"  image {meta['image_shape']} {meta['dtype']}")
  return path


if __name__ == "__main__":
  main()

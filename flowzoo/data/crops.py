"""`crops`: single-cell image crops streamed from disk (CellFlux in image space).

The registered dataset behind image configs such as
`cellflux_bbbc021_images.py`. Unlike the vector datasets it builds no
in-memory `Populations`: it converts an IMPA/CellFlux crop folder (one `.npy`
per cell and an index CSV, `flowzoo.data.crops_index`) once into a TFDS
dataset (`flowzoo.data.crops_tfds`), streams training batches from it with
grain (`flowzoo.data.crops_pipeline`), and loads only the held-out cells for
evaluation. `flowzoo.experiment.setup` sees `streamed = True` and builds an
`ImageExperiment`.

Splits: "train" are the training cells of every condition; "heldout" the
held-out cells (`test_fraction` of each condition, seeded) of the same
conditions, scored against generated cells whose sources are the held-out
controls of their plate (`control_test_fraction` of each plate's controls;
the training pairs never see them).
"""

from __future__ import annotations

import os
from pathlib import Path

from flowzoo import distributed
from flowzoo.data import crops_pipeline
from flowzoo.registry import DATASETS

# Our split names -> the TFDS dataset's treated splits.
SPLITS = {"train": "train", "heldout": "test"}
INDEX_FILE = "crops_index.csv"


def default_data_dir() -> Path:
  """Where converted datasets go: `$TFDS_DATA_DIR`, else TFDS's `~/tensorflow_datasets`."""
  return Path(os.environ.get("TFDS_DATA_DIR", Path.home() / "tensorflow_datasets"))


@DATASETS.register("crops")
class Crops:
  """A crops folder as a TFDS dataset, streamed (module docstring).

  Args:
    path: the crops folder holding `crops_index.csv`, or the CSV itself.
    data_dir: where the TFDS dataset is written ("" = `default_data_dir()`);
      an identical earlier conversion is reused.
    image_size: crops resized to `[image_size, image_size, C]`; 0 keeps them.
    control: the control compound's name in the CSV.
    test_fraction, control_test_fraction, split_seed: held-out cells of each
      condition and controls of each plate (`crops_index.read_crops_index`).
    pairing: "same_plate" (CellFlux) or "other_plates" (Table 2's batch ablation;
      needs 2+ plates).
    augment: random flips and 90-degree rotations of training crops.
    workers: grain worker processes decoding batches (0: in the training process).
  """

  streamed = True

  def __init__(self, path: str = "", data_dir: str = "", image_size: int = 32,
               control: str = "DMSO", test_fraction: float = 0.2,
               control_test_fraction: float = 0.2, split_seed: int = 0,
               pairing: str = "same_plate", augment: bool = True, workers: int = 0):
    from flowzoo.data import crops_tfds  # pylint: disable=import-outside-toplevel
    if not path:
      raise ValueError("dataset 'crops' needs a crops folder: --config.dataset.path=<folder "
                       f"with {INDEX_FILE}> (e.g. ../shared/data/bbbc021_crops).")
    index = Path(path).expanduser()
    index = index / INDEX_FILE if index.is_dir() else index
    if not index.is_file():
      raise FileNotFoundError(f"config.dataset.path={path!r}: no index CSV at {index} (a crops "
                              f"folder holds {INDEX_FILE}; see BUILD.md 'Your own crops').")
    if pairing not in crops_pipeline.PAIRINGS:
      raise ValueError(f"dataset 'crops': unknown pairing {pairing!r}; valid: "
                       f"{crops_pipeline.PAIRINGS}.")
    if image_size < 0 or workers < 0:
      raise ValueError(f"dataset 'crops': image_size and workers must be >= 0, got "
                       f"{image_size} and {workers}.")
    self.pairing, self.augment, self.workers = pairing, augment, workers
    build = dict(image_size=image_size or None, control=control, test_fraction=test_fraction,
                 control_test_fraction=control_test_fraction, seed=split_seed)
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    # One process converts; the others then find the finished dataset (fingerprint).
    if distributed.is_primary():
      self.path = crops_tfds.build_crops_dataset(index, data_dir, **build)
    distributed.barrier("crops dataset written")
    if not distributed.is_primary():
      self.path = crops_tfds.build_crops_dataset(index, data_dir, **build)
    self.metadata = crops_tfds.read_metadata(self.path)
    self.names = list(self.metadata["conditions"])
    self.event_shape = tuple(self.metadata["image_shape"])
    self.info = (f"{index.parent.name} crops {'x'.join(map(str, self.event_shape))} "
                 f"({self.metadata['splits'].get('train', 0)} training cells, "
                 f"{len(self.metadata['plates'])} plate(s))")

  def pipeline(self, *, batch_size: int, seed: int,
               whole: bool = False) -> crops_pipeline.CropsPipeline:
    """Training batches of this process (`CropsPipeline`); `whole`: every row, in any process."""
    import jax  # pylint: disable=import-outside-toplevel
    return crops_pipeline.CropsPipeline(
        self.path, batch_size=batch_size, seed=seed, split="train", pairing=self.pairing,
        augment=self.augment, process_index=0 if whole else jax.process_index(),
        process_count=1 if whole else jax.process_count(),
        worker_count=0 if whole else self.workers)

  def split(self, split: str) -> dict:
    """One of `SPLITS` in memory (`crops_pipeline.load_split`)."""
    if split not in SPLITS:
      raise ValueError(f"crops datasets have splits {list(SPLITS)}, not {split!r}.")
    return crops_pipeline.load_split(self.path, SPLITS[split])

  def has_split(self, split: str) -> bool:
    return split in SPLITS and self.metadata["splits"].get(SPLITS[split], 0) > 0

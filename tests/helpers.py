"""Tiny configs and data shared by tests (kept small: compiles dominate on 2 cores)."""

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.configs import cfm_letters

# Conditions of `write_crops`: DMSO is the control.
CONDITIONS = [("DMSO", 0.0), ("taxol", 1.0), ("taxol", 3.0), ("aphid", 0.5)]


def tiny_letters_config(**overrides):
  """cfm_letters runlocal shrunk to seconds: 2 letters, 4 rotations, tiny MLP."""
  c = cfm_letters.get_config("runlocal")
  c.dataset.letters = "SH"
  c.dataset.num_rotations = 4
  c.dataset.copies = 1
  c.dataset.points_per_copy = 64
  c.model.hidden = (16, 16)
  c.model.cond_embed = 8
  c.data.batch_size = 16
  c.data.populations_per_batch = 1
  c.train.steps = 8
  c.train.steps_per_dispatch = 4
  c.train.log_every = 4
  c.train.ckpt_every = 4
  c.train.keep_checkpoints = 6  # room for selection when a test lengthens the run
  c.train.ema_decay = 0.9
  c.eval.select = "heldout/w2"  # the Table 1 protocol the full config uses
  c.eval.solver = "euler"
  c.eval.num_steps = 4
  c.eval.max_samples = 64
  c.eval.chunk = 128
  c.eval.splits = ("heldout",)
  c.eval.plot_conditions = 2
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c


def write_crops(root: Path, *, per_group: int = 6, plates=("P1", "P2"), shape=(8, 8, 3),
                dtype=np.uint16, split: bool = False, seed: int = 0) -> Path:
  """`per_group` crops per (plate, condition) and an index CSV; returns its path."""
  rng = np.random.default_rng(seed)
  (root / "crops").mkdir(parents=True, exist_ok=True)
  rows = []
  for plate in plates:
    for compound, dose in CONDITIONS:
      for i in range(per_group):
        name = f"crops/{plate}_{compound}_{dose:g}_{i}.npy"
        np.save(root / name, rng.integers(0, 5000, shape).astype(dtype))
        row = {"path": name, "plate": plate, "well": "B02", "compound": compound,
               "dose": dose, "moa": "m"}
        if split:
          row["split"] = "test" if i == 0 and compound != "DMSO" else "train"
        rows.append(row)
  pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
  return root / "index.csv"

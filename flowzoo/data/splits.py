"""Held-out splits of a screen's compounds (MixFlow §5.3, CellFlux App. H, IMPA).

Named held-out lists: CellFlux's 8 compounds (Zhang et al. 2025, App. H,
Table 4) and IMPA's 10 (Palma et al. 2025, `bbbc021_all.yaml`), embedded here
and optionally re-read from the original config files (`splits_dir`); seeded
random splits hold out a fraction of the treated compounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from flowzoo.data import descriptors as desc_lib

# ood_set of CellFlux configs/bbbc021_all.yaml (commit 3256adc).
CELLFLUX_HELDOUT = ("docetaxel", "AZ841", "cytochalasin D", "simvastatin", "cyclohexamide",
                    "latrunculin B", "epothilone B", "lactacystin")
# ood_set of IMPA config_hydra/config/bbbc021_all.yaml (commit 13eb82f).
IMPA_HELDOUT = ("taxol", "ALLN", "bryostatin", "simvastatin", "MG-132", "methotrexate",
                "colchicine", "cytochalasin B", "AZ258", "cisplatin")
NAMED_HELDOUT = {"cellflux": CELLFLUX_HELDOUT, "impa": IMPA_HELDOUT}
SPLIT_FILES = {"cellflux": "cellflux/bbbc021_all.yaml", "impa": "impa/bbbc021_all.yaml"}
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
    if desc_lib.normalize_name(split) not in by_key:
      raise ValueError(f"Unknown split {split!r}: not one of {sorted(NAMED_HELDOUT)}, 'random', "
                       "'none', nor a treated compound of this dataset; a list of held-out "
                       f"compounds is a sequence or one string separated by ';'. Treated "
                       f"compounds: {treated}.")
    wanted = [split]  # one held-out compound
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

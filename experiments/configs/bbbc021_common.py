"""The BBBC021 set-up that mixflow_bbbc021.py, cfm_bbbc021.py and cellflux_bbbc021.py share.

Data, velocity network, optimizer, schedule and evaluation (MixFlow §5.3,
Table 4 protocol), so the three methods differ only in their method, base
and coupling sections.

Data: the real BBBC021 well profiles and MorphoDiff's RDKit descriptors
shipped with the package (`flowzoo/data/embedded/bbbc021/`: 632 wells x 189
features, 34 treated compounds with descriptors + DMSO), IMPA's 10 held-out
compounds (MixFlow §5.3), 4 training compounds as a validation split for any
choice of hyper-parameters or checkpoints, and same-plate control pairing.
Another copy of the file (e.g. ../shared/data/bbbc021_wells) is an override:
`--config.dataset.path=...`.

Variants: "" (the main job's budget), "runlocal" (a quick look),
"cellflux_split" (CellFlux's 8 held-out compounds, App. H), "sim" and
"sim_runlocal" (the simulated stand-in `bbbc021_sim`), "pca" (simulated
512-d cells reduced by PCA, for the `pca_dim` sweep).
"""

from experiments.configs import common

VARIANTS = ("", "runlocal", "cellflux_split", "sim", "sim_runlocal", "pca")
NUM_VALIDATION = 4
PAPER = "paper"


def split_paper(arg: str | None, who: str) -> tuple[str, bool]:
  """`("runlocal", True)` from "paper_runlocal": the size variant and whether the paper's recipe.

  The configs with a `:paper` preset (mixflow_bbbc021, cellflux_bbbc021) accept
  "paper" (the main job's data and budget) and "paper_runlocal".
  """
  arg = arg or ""
  if arg in (PAPER, f"{PAPER}_runlocal"):
    return arg[len(PAPER) + 1:], True
  if arg not in VARIANTS:
    raise ValueError(f"{who}: unknown variant {arg!r}; valid: "
                     f"{VARIANTS[1:] + (PAPER, PAPER + '_runlocal')}.")
  return arg, False


def base_config(arg: str, who: str):
  """The shared, unfinalized config of variant `arg` (`who`: the config's name, for errors)."""
  arg = arg or ""
  if arg not in VARIANTS:
    raise ValueError(f"{who}: unknown variant {arg!r}; valid: {VARIANTS[1:]}.")
  c = common.base_config()
  if arg in ("", "runlocal", "cellflux_split"):
    # Real well profiles: 3-21 wells per compound, 6 DMSO wells per plate.
    c.dataset = dict(name="bbbc021_wells", split="impa", num_validation=NUM_VALIDATION,
                     group_by="compound", include_control=True, pairing="same_plate")
    if arg == "cellflux_split":
      c.dataset.split = "cellflux"
  else:
    c.dataset = dict(name="bbbc021_sim", seed=0, dim=16, descriptor_dim=32, components=3,
                     cells_per_population=256, split="cellflux")
  c.data.batch_size = 256
  c.data.populations_per_batch = 1  # MixFlow Algorithm 1, lines 7-9: minibatches per population.
  c.model = dict(name="mlp", hidden=(256, 256, 256), act="silu", dropout=0.0,
                 time_frequencies=8, cond_embed=64, conditioning="concat")
  c.coupling = dict(name="exact")
  # Reference trainer: flow Adam(1e-3, betas (0.0, 0.99)); base Adam(1e-3).
  c.optim.update(lr=1e-3, b1=0.0, b2=0.99, schedule="cosine")
  c.optim_overrides.base = dict(b1=0.9, b2=0.999)
  c.train.update(steps=6000, steps_per_dispatch=500, log_every=1000, ckpt_every=3000,
                 ema_decay=0.999)
  c.eval.update(splits=("train", "heldout"), num_steps=32, max_samples=1000)
  if c.dataset.name == "bbbc021_wells":
    c.train.update(steps=2000, steps_per_dispatch=500, log_every=500, ckpt_every=1000)
    c.eval.update(splits=("validation", "heldout"), num_steps=16)
    # Held-out compounds have 2-9 wells each: generating only as many (the
    # default, samples_per_condition=0) makes the generated side of every
    # metric as noisy as the real side; 200 draws measure the model's
    # distribution (the unbiased metrics need no more to be unbiased).
    c.eval.samples_per_condition = 200
  else:
    # Generate as many cells per compound as the metrics use: with 256
    # generated cells two draws of one checkpoint differ by up to ~4 % per
    # seed, as much as most differences being measured.
    c.eval.samples_per_condition = c.eval.max_samples
  if arg in ("runlocal", "sim_runlocal"):
    c.model.hidden = (128, 128, 128)
    c.train.update(steps=1000, steps_per_dispatch=250, log_every=250, ckpt_every=1000)
    c.eval.update(num_steps=16, max_samples=500)
    if arg == "sim_runlocal":
      c.eval.update(splits=("heldout",), samples_per_condition=500)
  if arg == "pca":
    # MixFlow Fig. 3b: 512-d simulated cells, PCA-reduced (sweep `pca_dim` varies it).
    c.dataset.update(dim=512, pca_components=50)
  return c

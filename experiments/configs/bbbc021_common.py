"""The BBBC021 set-up that mixflow_bbbc021.py, cfm_bbbc021.py and cellflux_bbbc021.py share.

Data, velocity network, optimizer, schedule and evaluation (MixFlow §5.3,
Table 4 protocol), so the three methods differ only in their method, base
and coupling sections. Variants: "" (simulated `bbbc021_sim`), "runlocal",
"wells" (real well profiles in ../shared/data), "wells_runlocal", "pca"
(simulated 512-d cells reduced by PCA, for the `pca_dim` sweep).
"""

from pathlib import Path

from experiments.configs import common

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
WELLS_CSV = SHARED_DATA / "bbbc021_wells" / "BBBC021_feature_selected_mad_robustize.csv"
FINGERPRINTS = SHARED_DATA / "compound_embeddings" / "embeddings" / "csv" / "emb_fp.csv"
VARIANTS = ("", "runlocal", "wells", "wells_runlocal", "pca")


def base_config(arg: str, who: str):
  """The shared, unfinalized config of variant `arg` (`who`: the config's name, for errors)."""
  arg = arg or ""
  if arg not in VARIANTS:
    raise ValueError(f"{who}: unknown variant {arg!r}; valid: {VARIANTS[1:]}.")
  c = common.base_config()
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
  if arg in ("runlocal", "wells_runlocal"):
    c.model.hidden = (128, 128, 128)
    c.train.update(steps=1500, steps_per_dispatch=250, log_every=500, ckpt_every=1500)
    c.eval.update(splits=("heldout",), num_steps=16, max_samples=500)
  if arg.startswith("wells"):
    # Real well-level profiles: 632 wells x 189 features, ~18 wells per compound.
    c.dataset = dict(name="bbbc021_wells", path=str(WELLS_CSV), descriptors=str(FINGERPRINTS),
                     split="cellflux", group_by="compound", include_control=True)
    # Held-out compounds have 3-9 wells each: generating only as many (the
    # default, samples_per_condition=0) makes the generated side of every
    # metric as noisy as the real side; 500 draws measure the model's
    # distribution against the real wells.
    c.eval.samples_per_condition = 500
  else:
    # Generate as many cells per compound as the metrics use: with 256
    # generated cells two draws of one checkpoint differ by up to ~4 % per
    # seed, as much as most differences being measured.
    c.eval.samples_per_condition = c.eval.max_samples
  if arg == "pca":
    # MixFlow Fig. 3b: 512-d simulated cells, PCA-reduced (sweep `pca_dim` varies it).
    c.dataset.update(dim=512, pca_components=50)
  return c

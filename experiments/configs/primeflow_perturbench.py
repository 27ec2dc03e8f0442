"""PRiMeFlow (Yan et al. 2026) on PerturBench's devel data: flow matching in gene space.

PRiMeFlow = conditional flow matching from a standard Gaussian (§3.2) with the
independent coupling, straight paths (sigma = 0), condition dropout
p_uncond = 0.2 for classifier-free guidance (Algorithm 1; App. E Tables
10-11), and a U-Net over the gene axis whose input is Enc(x_t) + Emb(G)
(sinusoidal value encoding lifted by a 2-layer MLP plus a learned per-gene
embedding; time and Enc(c) through 2-layer MLPs; Eq. 3, `flowzoo/models/unet.py`).
Enc(c) = multi-hot singles || one-hot cell line (`anndata_perturbations`).
Sampling: 100 Euler steps (§4), guidance 1 (the headline "PRiMeFlow CFG1" of
Tables 2-3; `--sweep=guidance` adds CFG3 and CFG5, no retraining). Optimiser
(App. E): Adam(W) with lr 5e-5, weight decay 0, gradient clipping 5.0; the
paper's effective batch is 100 x 4 GPUs x 4 accumulation steps = 1600, ours
is the per-GPU 100 (no accumulation on one CPU).

Data: the PerturBench devel file embedded in flowzoo (5,961 cells x 500
log1p genes). Tasks (PerturBench; `flowzoo/data/perturbation_splits.py`):
  * "combo" (default, Norman19 K562): 3 two-gene combinations whose singles
    are measured alone are held out (+1 drawn for validation);
  * "covariate": 2 McFaline23 CRISPRi perturbations per glioblastoma line are
    held out while seen in the other lines (+1 validation).

Variants `get_config("[mlp|pca][_covariate][_runlocal|_paper]")`, tokens joined by "_":
  ""         U-Net in gene space (Table 11; Table 10 for covariate transfer)
  "mlp"      PRiMeFlow MLP ablation (Table 13 / Table 12): MLP, same data
  "pca"      FM PCA ablation (Table 15 / Table 14): MLP in a 50-component PCA
             fitted on training cells (the paper does not state its PC count)
  "covariate" the covariate-transfer task instead of combinations
and one size (the recipe above is the same in all three):
  (none)     CPU-sized default, at most 20 minutes on 2 cores: the U-Net at 8
             channels, 3 levels, batch 32, 2,000 steps; the MLPs 1024 x 2 at
             batch 256, 3,000 steps; lr 1e-3 and EMA 0.995 (the paper's 5e-5
             moves a run this short nowhere); 500 cells per evaluated condition
  "runlocal" at most 3 minutes: U-Net 8 channels, 2 levels, 400 steps; MLPs
             512 x 2 at batch 128, 600 steps; EMA 0.99; the held-out conditions
             only, 100 cells each, 50 Euler steps
  "paper"    App. E as stated: U-Net 256 channels, 5 levels, attention at the
             lowest, batch 100 (Table 11), 20k steps, lr 5e-5, EMA 0.999; the MLP
             sizes and learning rates of Tables 12-15; 1,000 cells per
             condition. GPU-sized: hours per 1,000 steps on a CPU.

    python -m experiments.run --config=primeflow_perturbench.py:runlocal --workdir=/tmp/pf
    python -m experiments.run --config=primeflow_perturbench.py --workdir=/tmp/pf_cpu
    python -m experiments.run --config=primeflow_perturbench.py:mlp_covariate --workdir=DIR
    python -m experiments.sweep --config=primeflow_perturbench.py:runlocal --sweep=methods \
        --seeds=0,1,2 --workdir=DIR --results=results/perturbench.md
    python -m experiments.sweep --config=primeflow_perturbench.py:runlocal --sweep=guidance \
        --workdir=DIR

Each run prints its PerturBench metrics beside the control, training-mean,
additive (combinations) and cross-cell-line (covariate transfer) baselines
(`flowzoo/perturbation_eval.py`) and writes its cells to `generated.h5ad`.
Expected (`methods` sweep at `:runlocal`, combination task, seeds 0-2, mean
over seeds of the held-out means; MMD gex / MMD pca / DEG recall / cos lfc /
RMSE; results/perturbench.md has every column, std and the paired changes):
  primeflow_unet 0.108  / 0.0729 / 0.036 / 0.050 / 0.170
  primeflow_mlp  0.243  / 0.0578 / 0.107 / 0.058 / 0.0917
  fm_pca         0.0103 / 0.0130 / 0.307 / 0.228 / 0.0355
  mixflow        0.137  / 0.0237 / 0.093 / 0.046 / 0.0675
  cfm            0.290  / 0.0682 / 0.107 / 0.035 / 0.107
  additive baseline 0.0016 / 0.0017 / 0.233 / 0.714 / 0.0199
At this size no flow beats the additive baseline on the distribution and mean
metrics; the PCA-space MLP is the best flow (and beats it on DEG recall).
Covariate transfer (`:covariate_runlocal`, same columns):
  primeflow_unet 0.0274 / 0.181  / 0.039 / 0.102 / 0.450
  primeflow_mlp  0.0052 / 0.0180 / 0.150 / 0.161 / 0.108
  fm_pca         0.0501 / 0.0133 / 0.146 / 0.449 / 0.103
  mixflow        0.0081 / 0.0371 / 0.174 / 0.169 / 0.110
  cfm            0.0223 / 0.0139 / 0.131 / 0.124 / 0.123
  train_mean baseline -0.0004 / 0.0021 / 0.087 / 0.634 / 0.0754
(the McFaline23 effects in these 500 genes are tiny: every flow loses to the
baselines on MMD and RMSE; MixFlow has the best DEG recall of any row).
The CPU default (`--config=primeflow_perturbench.py`, seed 0; 15 min 28 s on 2
idle cores, 2026-11-30): held-out 0.0173 / 0.0164 / 0.093 / 0.171 / 0.0437, better
than the control and training-mean baselines on MMD and RMSE, not the additive one.

Not the paper's: trigonometric interpolation of the MLP/PCA ablations (flowzoo
paths are linear), and the MLP's separate gene/condition/time input MLPs
(flowzoo's MLP concatenates [x_t, Fourier(t), embed(c)]).
"""

from experiments.configs import common

TASKS = {
    "combo": dict(split="combo", num_validation=1,
                  heldout=("KLF1+MAP2K6|k562", "MAP2K3+SLC38A2|k562", "MAPK1+TGFBR2|k562")),
    "covariate": dict(split="covariate", num_validation=1,
                      heldout=("MAPK1|A172", "MAP2K3|A172", "SGK1|T98G", "MAP4K3|T98G",
                               "TGFBR2|U87MG", "PLK4|U87MG")),
}
ARCHS = ("unet", "mlp", "pca")
PCA_COMPONENTS = 50
# PRiMeFlow App. E: (combination task = Norman19 table, covariate task = Srivatsan20 table).
UNET = {  # Tables 11 / 10
    "combo": dict(channel_mult=(1, 1, 2, 2, 4), batch=100),
    "covariate": dict(channel_mult=(1, 2, 2, 4, 4), batch=54),
}
MLP_HPO = {  # Tables 13 / 12 (PRiMeFlow MLP) and 15 / 14 (FM PCA)
    ("mlp", "combo"): dict(hidden=2048, layers=2, dropout=0.1, p_uncond=0.1, sigma=0.1,
                           lr=8.56e-6, weight_decay=9.58e-7, batch=1024),
    ("mlp", "covariate"): dict(hidden=3072, layers=2, dropout=0.0, p_uncond=0.0, sigma=0.01,
                               lr=3.71e-5, weight_decay=4.05e-7, batch=512),
    ("pca", "combo"): dict(hidden=1792, layers=4, dropout=0.2, p_uncond=0.4, sigma=0.01,
                           lr=1.73e-4, weight_decay=6.75e-6, batch=2048),
    ("pca", "covariate"): dict(hidden=3072, layers=4, dropout=0.2, p_uncond=0.4, sigma=0.1,
                               lr=8.18e-5, weight_decay=1.28e-10, batch=1024),
}


SIZES = ("runlocal", "paper")


def parse_variant(arg: str | None) -> tuple[str, str, str]:
  """`(arch, task, size)` from "[mlp|pca][_covariate][_runlocal|_paper]" (size "" = CPU)."""
  tokens = [t for t in (arg or "").split("_") if t]
  valid = set(ARCHS[1:]) | {"covariate"} | set(SIZES)
  bad = [t for t in tokens if t not in valid]
  archs = [t for t in tokens if t in ARCHS]
  sizes = [t for t in tokens if t in SIZES]
  if bad or len(archs) > 1 or len(sizes) > 1 or len(set(tokens)) != len(tokens):
    raise ValueError(f"unknown variant {arg!r}: use tokens from {sorted(valid)} joined by '_' "
                     "(at most one of mlp/pca and one of runlocal/paper), e.g. "
                     "'mlp_covariate_runlocal'.")
  return (archs[0] if archs else "unet", "covariate" if "covariate" in tokens else "combo",
          sizes[0] if sizes else "")


def dataset(task: str, pca_components: int = 0) -> dict:
  """The `anndata_perturbations` section for `task` (shared by MixFlow/CFM configs)."""
  return dict(name="anndata_perturbations", path="", perturbation_key="perturbation",
              controls=("control",), separator="+", covariate_keys=("cell_type",), dose_key="",
              layer="", gene_embeddings="", heldout_fraction=0.3, split_seed=0,
              pca_components=pca_components, min_cells=2, control_sources=True, **TASKS[task])


def get_config(arg: str | None = None):
  arch, task, size = parse_variant(arg)
  c = common.base_config()
  c.dataset = dataset(task, PCA_COMPONENTS if arch == "pca" else 0)
  c.base = dict(name="gaussian", sigma=1.0)  # p0 = N(0, I) (§3.2)
  c.coupling = dict(name="independent")       # independent coupling (§3.2)
  c.optim.update(name="adamw", schedule="constant", grad_clip=5.0, b1=0.9, b2=0.999)
  if arch == "unet":
    unet = UNET[task]
    c.model = dict(name="unet", base_channels=256, channel_mult=unet["channel_mult"],
                   num_res_blocks=2, attention_levels=(4,), num_heads=8, dropout=0.1,
                   act="silu", time_frequencies=8, emb_dim=256, scale_shift=True,
                   norm_groups=32, conv_resample=True, value_frequencies=4,
                   value_max_frequency=4.0, gene_embedding=True)
    c.method = dict(name="cfm", sigma=0.0, p_uncond=0.2, group_coupling=False)
    c.optim.update(lr=5e-5, weight_decay=0.0)
    batch = unet["batch"]
  else:
    h = MLP_HPO[(arch, task)]
    c.model = dict(name="mlp", hidden=(h["hidden"],) * h["layers"], act="silu",
                   dropout=h["dropout"], time_frequencies=8, cond_embed=256,
                   conditioning="concat")
    c.method = dict(name="cfm", sigma=h["sigma"], p_uncond=h["p_uncond"], group_coupling=False)
    c.optim.update(lr=h["lr"], weight_decay=h["weight_decay"])
    batch = h["batch"]
  c.train.update(steps=20_000, steps_per_dispatch=500, log_every=1000, ckpt_every=5000,
                 keep_checkpoints=2, ema_decay=0.999)
  # §4: 1,000 cells per condition, 100 Euler steps, CFG 1.
  c.eval.update(splits=("validation", "heldout"), solver="euler", num_steps=100, guidance=1.0,
                metrics=("w1", "w2", "mmd", "energy"), max_samples=1000,
                samples_per_condition=1000, chunk=1024)
  if size != "paper":
    # CPU sizes: the recipe stays, the networks shrink and the learning rate rises
    # (5e-5 over a few thousand steps leaves v near its zero initialisation).
    small = size == "runlocal"
    if arch == "unet":
      c.model.update(base_channels=8, channel_mult=(1, 2) if small else (1, 2, 2),
                     num_res_blocks=1, attention_levels=(), num_heads=1, emb_dim=64,
                     norm_groups=8)
      batch = 32
    else:
      c.model.hidden = (512, 512) if small else (1024, 1024)
      batch = 128 if small else 256
    c.optim.update(lr=1e-3)
    steps = (400 if small else 2000) if arch == "unet" else (600 if small else 3000)
    # EMA horizon ~100 (runlocal) / ~200 steps: with 0.999 the averaged weights
    # would still be mostly the initialisation (zero output layer: v = 0).
    # Dispatch lengths divide the step counts: a shorter last dispatch would compile again.
    c.train.update(steps=steps, steps_per_dispatch=200 if small else 250, log_every=200
                   if small else 500, ckpt_every=steps, ema_decay=0.99 if small else 0.995)
    cells = 100 if small else 500
    splits = ("heldout",) if small else ("validation", "heldout")
    c.eval.update(splits=splits, max_samples=cells, samples_per_condition=cells,
                  num_steps=50 if small else 100,
                  chunk=cells * len(TASKS[task]["heldout"]))
  # x1 ~ p_data over all training cells: every row its own condition.
  c.data.update(batch_size=batch, populations_per_batch=batch)
  return common.finalize(c)


def _variant(arch: str, task: str, size: str) -> str:
  return "_".join(t for t in (arch if arch != "unet" else "", task if task != "combo" else "",
                              size) if t)


def sweeps(arg: str | None = None) -> dict:
  """Named grids for `experiments.sweep`; `arg` is the config's variant.

  "methods" compares whole configs of the same task and size (`arg`):
  PRiMeFlow's U-Net, its MLP and PCA ablations (PRiMeFlow Tables 2-3),
  MixFlow and its CFM twin (MixFlow §5.2) - each point replaces the sections
  in which that config differs (`config.section_overrides`), except `eval`:
  every point is evaluated as `arg` is (same cells, solver and steps).
  """
  from experiments.configs import cfm_perturbench, mixflow_perturbench  # pylint: disable=g-import-not-at-top
  from flowzoo import config as config_lib  # pylint: disable=g-import-not-at-top
  _, task, size = parse_variant(arg)
  base = get_config(arg)
  mix = _variant("unet", task, "runlocal" if size == "runlocal" else "")  # no "paper" size
  others = {
      "primeflow_unet": get_config(_variant("unet", task, size)),
      "primeflow_mlp": get_config(_variant("mlp", task, size)),
      "fm_pca": get_config(_variant("pca", task, size)),
      "mixflow": mixflow_perturbench.get_config(mix),
      "cfm": cfm_perturbench.get_config(mix),
  }
  return {
      # Tables 2-3: CFG 1 / 3 / 5 (guidance is evaluation-only: one training run).
      "guidance": [(f"cfg{g}", {"eval.guidance": float(g)}) for g in (1, 3, 5)],
      "methods": [(name, {k: v for k, v in config_lib.section_overrides(base, c).items()
                          if k != "eval"}) for name, c in others.items()],
  }

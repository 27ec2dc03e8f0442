"""MixFlow (§5.2) on PerturBench's devel data: the same task and data as primeflow_perturbench.py.

MixFlow predicts held-out perturbations' cells from a descriptor-conditioned
GMM base h_Theta(y) with exact minibatch OT inside each population and the
0.1 / 0.8 / 0.1 planner (MixFlow Algorithm 1); here y = Enc(c), the multi-hot
singles || one-hot cell line of `anndata_perturbations`, so a held-out
combination's base is predicted from its seen singles. The velocity field is
flowzoo's MLP (MixFlow's reference is an MLP); base, coupling, optimiser and
planner are mixflow_bbbc021.py's (see the reasons there). MixFlow §5.2 scores
W1, W2, MMD and energy distance: `eval.metrics`; every run adds PerturBench's
metrics and prints them beside the control, training-mean and additive /
cross-cell-line baselines (`flowzoo/perturbation_eval.py`).

Variants "[pca][_covariate][_paper][_runlocal]": the combination task
(default) or covariate transfer, gene space or the 50-component training PCA,
the paper's recipe, and a CPU size (MLP 256 x 3, 1,500 steps, 100 cells per
held-out condition).

`paper` is the reference trainer's recipe, which is the reference code's
perturbation trainer (Lotfollahi-lab/MixFlow; `mixflow_bbbc021.paper_sections`):
sigma^2 = 0.01, soft Gumbel-softmax draws, no dropout in h_Theta, h_p, no EMA,
constant learning rates (base lr 1e-3), no clipping, and a base step at every
multiple of k = 10. The velocity network and the data stay this config's:
the reference's network for §5.2 is an MLP, and Norman, Combo-SciPlex and the
other datasets of MixFlow Table 3 are not shipped. So only the ordering
compares with Table 3 (Norman, mean +- std over 4 splits, MMD / W1 / W2 /
ED): MixFlow 0.192 / 30.08 / 456.3 / 15.9, CFM 0.199 / 30.45 / 467.8 / 16.2.

    python -m experiments.sweep --config=mixflow_perturbench.py:paper --sweep=baseline \
        --seeds=0,1,2 --workdir=DIR

Not run yet; `paper_runlocal` is its CPU twin.

    python -m experiments.run --config=mixflow_perturbench.py:runlocal --workdir=/tmp/mixflow_pb
    python -m experiments.sweep --config=mixflow_perturbench.py:runlocal --sweep=baseline \
        --workdir=DIR        # MixFlow and its CFM twin (cfm_perturbench.py)

Expected metrics: results/perturbench.md (`primeflow_perturbench.py`'s "methods"
sweep runs this config's runlocal variant as its "mixflow" point, 3 seeds).
"""

from experiments.configs import common, mixflow_bbbc021, primeflow_perturbench

VALID = ("pca", "covariate", "paper", "runlocal")


def parse_variant(arg: str | None) -> tuple[bool, str, bool, bool]:
  """`(pca, task, paper, runlocal)` from "[pca][_covariate][_paper][_runlocal]"."""
  tokens = [t for t in (arg or "").split("_") if t]
  if any(t not in VALID for t in tokens) or len(set(tokens)) != len(tokens):
    raise ValueError(f"unknown variant {arg!r}: use tokens from {VALID} joined by '_'.")
  return ("pca" in tokens, "covariate" if "covariate" in tokens else "combo", "paper" in tokens,
          "runlocal" in tokens)


def get_config(arg: str | None = None):
  pca, task, paper, runlocal = parse_variant(arg)
  c = common.base_config()
  c.dataset = primeflow_perturbench.dataset(
      task, primeflow_perturbench.PCA_COMPONENTS if pca else 0)
  c.data.update(batch_size=256, populations_per_batch=1)  # Algorithm 1, lines 7-9
  c.method = dict(name="mixflow", sigma=0.0, p_uncond=0.0, group_coupling=True,
                  warmup=0.1, alternating=0.8, cooldown=0.1, base_every=10)
  c.model = dict(name="mlp", hidden=(512, 512, 512), act="silu", dropout=0.0,
                 time_frequencies=8, cond_embed=64, conditioning="concat")
  c.base = dict(name="gmm", num_modes=10, variance=0.25, temperature=0.5, means="mlp",
                hidden=(128,), dropout=0.5, straight_through=True, data_init="kmeans")
  c.coupling = dict(name="exact")
  c.optim.update(lr=1e-3, b1=0.0, b2=0.99, schedule="cosine")
  c.optim_overrides.base = dict(b1=0.9, b2=0.999)
  c.train.update(steps=10_000, steps_per_dispatch=500, log_every=1000, ckpt_every=5000,
                 ema_decay=0.999)
  c.eval.update(splits=("validation", "heldout"), solver="euler", num_steps=100, guidance=1.0,
                metrics=("w1", "w2", "mmd", "energy"), max_samples=1000,
                samples_per_condition=1000)
  if runlocal:
    c.model.hidden = (256, 256, 256)
    c.train.update(steps=1500, steps_per_dispatch=250, log_every=500, ckpt_every=1500,
                   ema_decay=0.99)
    c.eval.update(splits=("heldout",), max_samples=100, samples_per_condition=100,
                  chunk=100 * len(primeflow_perturbench.TASKS[task]["heldout"]))
  if paper:
    mixflow_bbbc021.paper_sections(c)
  return common.finalize(c)


def sweeps() -> dict:
  """Named grids for `experiments.sweep`: MixFlow vs its CFM twin (base N(0, I))."""
  return {"baseline": [("mixflow", {}), ("cfm", {"base.name": "gaussian"})]}

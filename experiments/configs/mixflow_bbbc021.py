"""THE MAIN JOB: MixFlow, CFM and CellFlux on real BBBC021 held-out compounds (MixFlow §5.3, Table 4).

Trains MixFlow (descriptor-conditioned GMM base h_Theta(y), h_p(y) with
K-means-initialised centres, exact minibatch OT within each population, the
0.1 / 0.8 / 0.1 planner with k = 10) and, as its declared learned baselines
(`baselines`), its CFM twin (`cfm_ot_twin`: `base.name=gaussian`, the same
network, coupling and schedule) and CellFlux built from parts (`cellflux`:
the control wells of the target's own plate as the source, CFG 1.2, noise
augmentation; cellflux_bbbc021.py). Data: the real well profiles and RDKit
descriptors shipped with the package (bbbc021_common.py), IMPA's 10 held-out
compounds, same-plate control pairing. One table compares the three with
four trivial baselines (control wells, pooled training compounds, nearest
compound by descriptor, ridge on descriptors) on unbiased MMD and energy
distance, mean-profile RMSE, Pearson/cosine of the change from control,
retrieval rank and top-1, and MoA accuracy (flowzoo/compound_eval.py), with
95 % bootstrap intervals over compounds and a line naming the best row per
metric.

    python -m experiments.run --config=mixflow_bbbc021.py --workdir=/tmp/mixflow_bbbc021
    python -m experiments.run --config=mixflow_bbbc021.py:runlocal --workdir=/tmp/mixflow_bbbc021_local
    python -m experiments.run --config=mixflow_bbbc021.py:cellflux_split --workdir=DIR  # CellFlux's 8
    python -m experiments.run --config=mixflow_bbbc021.py:sim --workdir=DIR   # simulated stand-in
    python -m experiments.run --config=mixflow_bbbc021.py --workdir=DIR --config.baselines.cellflux=  # no CellFlux arm
    python -m experiments.sweep --config=mixflow_bbbc021.py --sweep=methods --seeds=0,1,2,3,4 \
        --reference=cfm_ot_twin --workdir=DIR --results=results/mixflow_bbbc021.md
    python -m experiments.sweep --config=mixflow_bbbc021.py:sim --sweep=modes --workdir=DIR   # Fig. 3a
    python -m experiments.sweep --config=mixflow_bbbc021.py:pca --sweep=pca_dim --workdir=DIR  # Fig. 3b

Expected (results/mixflow_bbbc021.md: tables, commands, verdict lines; the
`methods` sweep, 5 seeds, held-out compounds, mean over seeds):
  IMPA split (default): unbiased MMD / energy / mean-profile RMSE / MoA accuracy
    MixFlow 0.154 / 16.2 / 1.37 / 0.51, CFM twin 0.106 / 13.4 / 1.35 / 0.43,
    CellFlux 0.095 / 10.6 / 1.24 / 0.41; baselines pooled 0.103 / 15.4 / 1.54 / 0.08,
    linear 0.199 / 14.9 / 1.28 / 0.60. MixFlow is worse than its twin on every
    distribution metric in 5/5 seeds (better on MoA accuracy, 5/5); only CellFlux
    beats the pooled baseline on MMD, and the linear baseline is the best on
    retrieval rank (0.19) and MoA accuracy.
  CellFlux's split (`:cellflux_split`): MixFlow beats its twin in 5/5 seeds on
    energy, RMSE, Pearson, retrieval and MoA accuracy but not on MMD; CellFlux is
    the best row on every metric but MoA accuracy (nearest-compound baseline).

`:paper` (CPU twin `:paper_runlocal`): MixFlow as the reference code
(Lotfollahi-lab/MixFlow `trainer/perturbations_trainer.py` defaults) trains
it: mode variance sigma^2 = 0.01, soft Gumbel-softmax draws for the flow too
(`gumbel_softmax_flag_hard=False`: base.straight_through=False), no dropout
in h_Theta, h_p (`prob_dropout_Htheta` 0, `prob_dropout_fc1fc2` 0), no EMA,
constant learning rates (flow Adam 1e-3 betas (0, 0.99), base Adam 1e-3), no
gradient clipping, the
planner 0.1 / 0.8 / 0.1 with a base step at every step that is a multiple of
k = 10 (`method.base_step_rule=step_mod_k`: 9 flow steps per base step). Its
learned baselines: flowzoo's twin (`cfm_ot_twin`), the reference's CFM
baseline (`cfm_paper_baseline`: the twin behind a frozen random condition
encoder with dropout 0.5, `method.cond_encoder=paper_baseline`) and
CellFlux. Not the reference's: its condition encoder is shared by the base
and the flow and trained on base steps (flowzoo's base has its own
descriptor networks; the flow embeds the descriptor itself), its base step
adds no flow-matching term (`coef_FMloss` 0, as here), and its phases are
counted in epochs. MixFlow Table 4 (BBBC021, DINOv2 image embeddings, 768-d;
not these 189-d profiles): MMD 0.0439 vs CFM 0.2504, energy 2.40 vs 18.92.
Not yet run:

    python -m experiments.run --config=mixflow_bbbc021.py:paper --workdir=DIR
"""

from experiments.configs import bbbc021_common, cellflux_bbbc021, common
from flowzoo import config as config_lib

# The learned baselines the main job trains beside MixFlow (`experiments.run`).
CFM_TWIN = "base.name=gaussian"
BASELINES = dict(cfm_ot_twin=CFM_TWIN, cellflux=cellflux_bbbc021.OVERRIDES)
# The reference's CFM baseline: the twin behind a frozen, randomly initialised
# condition encoder with dropout 0.5 (`flowzoo.methods.cfm.ConditionEncoder`).
CFM_PAPER_BASELINE = CFM_TWIN + ";method.cond_encoder='paper_baseline'"


def paper_sections(c) -> None:
  """MixFlow's reference trainer (Lotfollahi-lab/MixFlow) over a MixFlow config (`:paper`)."""
  c.method.update(warmup=0.1, alternating=0.8, cooldown=0.1, base_every=10,
                  base_step_rule="step_mod_k")
  c.base.update(variance=0.01, straight_through=False, dropout=0.0)
  c.optim.update(lr=1e-3, b1=0.0, b2=0.99, schedule="constant", grad_clip=0.0)
  c.optim_overrides.base = dict(lr=1e-3, b1=0.9, b2=0.999)
  c.train.ema_decay = 0.0


def get_config(arg: str | None = None):
  arg, paper = bbbc021_common.split_paper(arg, "mixflow_bbbc021")
  c = bbbc021_common.base_config(arg, "mixflow_bbbc021")
  c.method = dict(name="mixflow", sigma=0.0, p_uncond=0.0, group_coupling=True,
                  warmup=0.1, alternating=0.8, cooldown=0.1, base_every=10)
  # sigma^2 = 0.25, not the reference's 0.01: on bbbc021_sim (per-feature
  # spreads of 0.25-0.5) near-point modes made the flow's start stiff (0.01
  # lost to CFM on runlocal, 0.25 won). Dropout 0.5 as the
  # reference's condition encoder (`prob_dropout_conditionencoder`).
  # straight_through: the flow trains on exact (hard) mixture draws, the ones
  # it starts from at generation, while L_geo keeps the soft Gumbel-softmax
  # gradient (the reference trains the flow on soft draws).
  c.base = dict(name="gmm", num_modes=10, variance=0.25, temperature=0.5, means="mlp",
                hidden=(128,), dropout=0.5, straight_through=True, data_init="kmeans")
  c.baselines = dict(BASELINES)
  if paper:
    paper_sections(c)
    c.baselines.cfm_paper_baseline = CFM_PAPER_BASELINE
  return common.finalize(c)


def sweeps() -> dict:
  """Named grids for `experiments.sweep` (name -> points of overrides)."""
  cfm = config_lib.parse_overrides(CFM_TWIN)
  return {
      "baseline": [("mixflow", {}), ("cfm_ot_twin", cfm)],
      # CellFlux (control cells as the source, CFG, noise augmentation) beside them.
      "methods": [("mixflow", {}), ("cfm_ot_twin", cfm), ("cellflux", cellflux_bbbc021.overrides())],
      "modes": [(f"I{i}", {"base.num_modes": i}) for i in (1, 2, 5, 10, 20)],
      "pca_dim": [(f"{m}_pca{d}", dict(o, **{"dataset.pca_components": d}))
                  for d in (50, 100, 200, 500)
                  for m, o in (("mixflow", {}), ("cfm_ot_twin", cfm))],
  }

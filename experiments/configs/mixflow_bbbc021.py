"""THE MAIN JOB: MixFlow vs its CFM twin on BBBC021 held-out compounds (MixFlow §5.3, Table 4).

Trains MixFlow (descriptor-conditioned GMM base h_Theta(y), h_p(y) with
K-means-initialised centres, exact minibatch OT within each population, the
0.1 / 0.8 / 0.1 planner with k = 10) and, as its declared learned baseline
(`baselines.cfm_ot_twin`), the same config with `base.name=gaussian`: CFM
with the same network, exact OT coupling and schedule. Both are evaluated on
the 8 held-out compounds of CellFlux's split; one table compares them (MMD,
W1, W2, energy distance). Data, network, optimizer and evaluation are the
shared BBBC021 set-up (`bbbc021_common.py`).

DEFAULT DATA IS SIMULATED: `bbbc021_sim` generates BBBC021-like populations
(the real compound names and MoA classes, synthetic descriptors and cells;
flowzoo/data/bbbc021_sim.py). `:wells` runs on the real well-level
CellProfiler profiles in ../shared/data/bbbc021_wells (189 features,
Morgan-fingerprint descriptors):

    python -m experiments.run --config=mixflow_bbbc021.py --workdir=/tmp/mixflow_bbbc021
    python -m experiments.run --config=mixflow_bbbc021.py:runlocal --workdir=/tmp/mixflow_bbbc021_local
    python -m experiments.run --config=mixflow_bbbc021.py:wells --workdir=/tmp/mixflow_bbbc021_wells
    python -m experiments.run --config=mixflow_bbbc021.py --workdir=DIR --config.baselines.cfm_ot_twin=  # MixFlow only
    python -m experiments.sweep --config=mixflow_bbbc021.py --sweep=methods --reference=cfm_ot_twin --workdir=DIR
    python -m experiments.sweep --config=mixflow_bbbc021.py --sweep=modes --workdir=DIR   # Fig. 3a
    python -m experiments.sweep --config=mixflow_bbbc021.py:pca --sweep=pca_dim --workdir=DIR  # Fig. 3b

Expected (results/mixflow_bbbc021.md has the tables and commands): on the
simulated data MixFlow does NOT beat its CFM twin (seed 0, default variant,
held-out W1 / W2 / MMD / energy: MixFlow 2.841 / 3.076 / 0.0353 / 0.557,
CFM twin 2.798 / 2.930 / 0.0286 / 0.460).
"""

from experiments.configs import bbbc021_common, cellflux_bbbc021, common
from flowzoo import config as config_lib

# The learned baseline the main job trains beside MixFlow (`experiments.run`).
CFM_TWIN = "base.name=gaussian"


def get_config(arg: str | None = None):
  c = bbbc021_common.base_config(arg, "mixflow_bbbc021")
  c.method = dict(name="mixflow", sigma=0.0, p_uncond=0.0, group_coupling=True,
                  warmup=0.1, alternating=0.8, cooldown=0.1, base_every=10)
  # sigma^2 = 0.25, not the reference's 0.01: these cells have per-feature
  # spreads of 0.25-0.5 (bbbc021_sim), and near-point modes made the flow's
  # start stiff (0.01 lost to CFM on runlocal, 0.25 won). Dropout 0.5 as the
  # reference's condition encoder (`prob_dropout_conditionencoder`).
  # straight_through: the flow trains on exact (hard) mixture draws, the ones
  # it starts from at generation, while L_geo keeps the soft Gumbel-softmax
  # gradient (the reference trains the flow on soft draws).
  c.base = dict(name="gmm", num_modes=10, variance=0.25, temperature=0.5, means="mlp",
                hidden=(128,), dropout=0.5, straight_through=True, data_init="kmeans")
  c.baselines = dict(cfm_ot_twin=CFM_TWIN)
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

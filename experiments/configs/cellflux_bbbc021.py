"""CellFlux (§3, App. C) on BBBC021 held-out compounds, built from flowzoo's parts.

CellFlux maps the control cells of a compound's own plates to its treated
cells: base `empirical` (x0 = a DMSO well of the target row's own plate: the
dataset's same-plate pairing, in training and generation), independent pairing, the conditional flow-matching loss with
condition dropout p_c = 0.2 and classifier-free guidance 1.2 at generation,
and noise augmentation of x0 with probability p_e = 0.5, eps ~ N(0, I)
(Eq. 5, Algorithm 1). At generation x0 gets N(0, I) noise too, as CellFlux's
code does (`method.inference_noise=1.0`; the paper's Algorithm 1 has none):
without it a compound's "500 generated wells" would be one deterministic
path per control well, 12-18 distinct points. Everything else is the shared BBBC021 set-up
(`bbbc021_common.py`: data and variants, velocity network, optimizer,
schedule, evaluation), so MixFlow, CFM and CellFlux differ only in these
choices. Not CellFlux's: the U-Net on images and its optimizer (Adam 1e-4,
batch 128, 100 epochs) — these are 189-d well profiles, on the main job's
budget.

    python -m experiments.run --config=cellflux_bbbc021.py --workdir=/tmp/cellflux_bbbc021
    python -m experiments.run --config=cellflux_bbbc021.py --workdir=DIR \
        --config.coupling.name=sinkhorn        # "CellFlux with an OT coupling"
        # (an OT coupling re-pairs sources and targets within the minibatch,
        # so a source's plate need not be its target's any more)
    python -m experiments.run --config=cellflux_bbbc021.py --workdir=DIR \
        --config.dataset.pairing=other_plates  # Table 2d: sources from other plates

Expected numbers: the `cellflux` rows of results/mixflow_bbbc021.md (the
main job trains this config as its `cellflux` arm).

`:paper` (and its CPU twin `:paper_runlocal`) switches to what CellFlux's code
does where it differs from the paper's Algorithm 1 (yuhui-zh15/CellFlux
`training/train_loop.py`, `scripts/slurm_bbbc021.sh`): the noise augmentation
and the condition drop decided once per minibatch (`method.decide_per=batch`),
t from the EDM-skewed distribution (`method.time_sampling=skewed`, mean
0.7194), N(0, 1) noise on x0 at inference too (as the default here), and Heun
with 50 steps (`eval.solver=heun`, 100 network evaluations, as the code's heun2
on a 50-interval grid; the code's grid is EDM's rho = 7 schedule, flowzoo's is
uniform). The code's optimizer: AdamW (torch defaults: weight decay 0.01)
with lr 1e-4 (App. C says Adam 1e-4), betas (0.9, 0.95), constant, no
clipping; batch 128 (App. C; the code: 32 per GPU x 4). Kept from the main job: the MLP on 189-d profiles (the
code's is a U-Net on images), its 2,000 steps (the code trains 200 epochs of
images, App. C says 100) and EMA 0.999 (the code uses an EMA too). CellFlux's
numbers (Tables 1-2, images, FID and MoA accuracy) do not compare with these
profile metrics: BBBC021 FID_o 18.7, FID_c 56.8, MoA accuracy 71.1 %; unseen
compounds (Table 2b) FID_o 42.0, MoA accuracy 43.2 %. Not yet run:

    python -m experiments.run --config=cellflux_bbbc021.py:paper --workdir=DIR
"""

from experiments.configs import bbbc021_common, common
from flowzoo import config as config_lib

# CellFlux's method choices; also the `cellflux` point of mixflow_bbbc021's
# `methods` sweep (as dotted overrides of the main job's config).
METHOD = dict(name="cfm", sigma=0.0, p_uncond=0.2, group_coupling=True, source_noise=1.0,
              source_noise_prob=0.5, inference_noise=1.0)
BASE = dict(name="empirical")
COUPLING = dict(name="independent")
GUIDANCE = 1.2
# `:paper`: CellFlux's code where it differs from Algorithm 1 (module docstring).
PAPER_METHOD = dict(decide_per="batch", time_sampling="skewed")
PAPER_EVAL = dict(solver="heun", num_steps=50)


def overrides() -> dict:
  """CellFlux as `section.field` overrides of a BBBC021 config."""
  out = {f"{section}.{k}": v for section, fields in
         (("method", METHOD), ("base", BASE), ("coupling", COUPLING)) for k, v in fields.items()}
  return dict(out, **{"eval.guidance": GUIDANCE})


# The same, as the main job's `baselines.cellflux` arm.
OVERRIDES = config_lib.format_overrides(overrides())


def get_config(arg: str | None = None):
  arg, paper = bbbc021_common.split_paper(arg, "cellflux_bbbc021")
  c = bbbc021_common.base_config(arg, "cellflux_bbbc021")
  c.method, c.base, c.coupling = dict(METHOD), dict(BASE), dict(COUPLING)
  c.eval.guidance = GUIDANCE
  if paper:
    c.method.update(PAPER_METHOD)
    c.eval.update(PAPER_EVAL)
    c.optim.update(name="adamw", lr=1e-4, b1=0.9, b2=0.95, weight_decay=0.01,
                   schedule="constant", grad_clip=0.0)
    c.data.batch_size = 128
  return common.finalize(c)

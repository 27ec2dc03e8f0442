"""CellFlux (§3, App. C) on BBBC021 held-out compounds, built from flowzoo's parts.

CellFlux maps the control cells of a compound's own plates to its treated
cells: base `empirical` (x0 = a DMSO cell of the same plates, the dataset's
`sources`), independent pairing, the conditional flow-matching loss with
condition dropout p_c = 0.2 and classifier-free guidance 1.2 at generation,
and noise augmentation of x0 with probability p_e = 0.5, eps ~ N(0, I)
(Eq. 5, Algorithm 1). Everything else (data and variants, velocity network,
optimizer, schedule, evaluation) is `mixflow_bbbc021.py`'s, so the three
methods differ only in these choices; `python -m experiments.sweep
--config=mixflow_bbbc021.py --sweep=methods --workdir=DIR` runs MixFlow, CFM
and CellFlux side by side. Not CellFlux's: the U-Net on images and its
optimizer (Adam 1e-4, batch 128, 100 epochs) — these are 16-d simulated
cells or 189-d well profiles, on the main job's 6,000-step budget.

    python -m experiments.run --config=cellflux_bbbc021.py --workdir=/tmp/cellflux_bbbc021
    python -m experiments.run --config=cellflux_bbbc021.py:wells --workdir=DIR
    python -m experiments.run --config=cellflux_bbbc021.py --workdir=DIR \
        --config.coupling.name=sinkhorn        # "CellFlux with an OT coupling"

DEFAULT DATA IS SIMULATED (`bbbc021_sim`, see mixflow_bbbc021.py).
Expected metrics: see README "Results" (measured numbers live there).
"""

from experiments.configs import common, mixflow_bbbc021

# CellFlux's method choices; also the `cellflux` point of mixflow_bbbc021's
# `methods` sweep (as dotted overrides of the main job's config).
METHOD = dict(name="cfm", sigma=0.0, p_uncond=0.2, group_coupling=True, source_noise=1.0,
              source_noise_prob=0.5)
BASE = dict(name="empirical")
COUPLING = dict(name="independent")
GUIDANCE = 1.2


def overrides() -> dict:
  """CellFlux as `section.field` overrides of `mixflow_bbbc021.py`."""
  out = {f"{section}.{k}": v for section, fields in
         (("method", METHOD), ("base", BASE), ("coupling", COUPLING)) for k, v in fields.items()}
  return dict(out, **{"eval.guidance": GUIDANCE})


def get_config(arg: str | None = None):
  c = mixflow_bbbc021.get_config(arg)
  c = common.replace_section(c, "method", **METHOD)
  c = common.replace_section(c, "base", **BASE)
  c = common.replace_section(c, "coupling", **COUPLING)
  c.eval.guidance = GUIDANCE
  c.compare.sweep = ""
  return c

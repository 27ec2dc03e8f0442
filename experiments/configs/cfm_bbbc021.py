"""Vanilla CFM on BBBC021 held-out compounds: the OT twin of mixflow_bbbc021.py with base N(0, I).

The shared BBBC021 set-up (`bbbc021_common.py`: same variants, data,
velocity network, exact per-population OT coupling, optimizer and schedule)
with `method.name=cfm`, `base.name=gaussian`: with a fixed base MixFlow has
nothing to project and is CFM (MixFlow §3, first paragraph; Table 4's CFM
row). The main job trains this twin itself as its `cfm_ot_twin` baseline.

Data: the real BBBC021 well profiles shipped with the package (`:sim` for
the simulated stand-in).

    python -m experiments.run --config=cfm_bbbc021.py --workdir=/tmp/cfm_bbbc021
    python -m experiments.run --config=cfm_bbbc021.py:runlocal --workdir=/tmp/cfm_bbbc021_local

Expected: the `cfm_ot_twin` rows of results/mixflow_bbbc021.md.
"""

from experiments.configs import bbbc021_common, common


def get_config(arg: str | None = None):
  c = bbbc021_common.base_config(arg, "cfm_bbbc021")
  c.method = dict(name="cfm", sigma=0.0, p_uncond=0.0, group_coupling=True)
  c.base = dict(name="gaussian", sigma=1.0)
  return common.finalize(c)

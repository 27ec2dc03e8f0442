"""Vanilla CFM on BBBC021 held-out compounds: the twin of mixflow_bbbc021.py with base N(0, I).

Identical to `mixflow_bbbc021.py` (same variants, data, velocity network,
exact per-population OT coupling, optimizer and schedule) except
`base.name=gaussian`: with a fixed base MixFlow has nothing to project and
is vanilla CFM (MixFlow §3, first paragraph; Table 4's CFM row). It is one
plain run (`compare.sweep=''`); the main job runs both methods itself.

DEFAULT DATA IS SIMULATED (`bbbc021_sim`); `:wells` uses the real
well-level profiles in ../shared/data/bbbc021_wells (see mixflow_bbbc021.py).

    python -m experiments.run --config=cfm_bbbc021.py --workdir=/tmp/cfm_bbbc021
    python -m experiments.run --config=cfm_bbbc021.py:runlocal --workdir=/tmp/cfm_bbbc021_local
    python -m experiments.run --config=cfm_bbbc021.py:wells --workdir=/tmp/cfm_bbbc021_wells

Expected metrics: see README "Results" (measured numbers live there).
"""

from experiments.configs import common, mixflow_bbbc021


def get_config(arg: str | None = None):
  c = common.replace_section(mixflow_bbbc021.get_config(arg), "base", name="gaussian", sigma=1.0)
  c.compare.sweep = ""
  return c

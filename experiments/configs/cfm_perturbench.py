"""Vanilla CFM on PerturBench's devel data: the twin of mixflow_perturbench.py with base N(0, I).

Identical to `mixflow_perturbench.py` (variants, data, task, MLP, exact
per-population OT coupling, optimiser, schedule) except `base.name=gaussian`:
with a fixed base MixFlow has nothing to project and is vanilla CFM (MixFlow
§3; Table 3's CFM rows).

    python -m experiments.run --config=cfm_perturbench.py:runlocal --workdir=/tmp/cfm_pb
    python -m experiments.perturbench_eval --workdir=/tmp/pf --workdir=/tmp/mixflow_pb \
        --workdir=/tmp/cfm_pb     # finished runs of different configs in one table

Expected metrics: results/perturbench.md (the "cfm" point of primeflow_perturbench.py's
"methods" sweep, 3 seeds).
"""

from experiments.configs import common, mixflow_perturbench


def get_config(arg: str | None = None):
  return common.replace_section(mixflow_perturbench.get_config(arg), "base", name="gaussian",
                                sigma=1.0)

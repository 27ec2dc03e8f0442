"""OT-CFM on rotated letters: cfm_letters with the minibatch Sinkhorn coupling (Tong et al. 2023).

Same data, model and schedule as cfm_letters.py; pairs within each minibatch
(one population per batch) are drawn from the entropic OT plan (eps 0.05 on
the mean-scaled squared Euclidean cost, MixFlow Algorithm 1 line 10).

    python -m experiments.run --config=otcfm_letters.py --workdir=/tmp/otcfm_letters
    python -m experiments.run --config=otcfm_letters.py:runlocal --workdir=/tmp/otcfm_letters_local

Expected (`:runlocal`, seed 0, W1 / W2 / MMD / energy; checks the code runs,
not the paper's protocol): train 0.6536 / 0.7957 / 0.01973 / 0.06368,
heldout 0.5733 / 0.6703 / 0.01519 / 0.04966. The full config was not measured.
"""

from experiments.configs import cfm_letters, common


def get_config(arg: str | None = None):
  return common.replace_section(
      cfm_letters.get_config(arg), "coupling", name="sinkhorn", epsilon=0.05,
      scale_cost="mean", max_iterations=200, threshold=1e-3, pairs="sample")

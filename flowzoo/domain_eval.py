"""The evaluation a dataset family adds to `eval.json`, and its trivial baselines.

A dataset family with its own protocol has one module with the same four
functions, so runs, multi-arm runs and sweeps treat them alike:

* `applies(config) -> bool`: the config's dataset is of this family;
* `score_run(config, pops, samples, splits) -> results`: metrics of a run's
  generated samples (`"<split>/<condition>" -> [n, D]`) in `eval.json`'s
  form, `results[metric][split] = {"mean", "per_condition"}`;
* `add_baselines(config, split, results, seeds) -> extras`: puts the trivial
  baselines' results into a report's `(point, seed) -> results` and returns
  the `report.summarize` extras (`names`, `metrics`, `higher`,
  `descriptions`, `notes`);
* `comparable(a, b) -> bool`: runs of configs `a` and `b` share the real data
  the baselines are scored on, so one baseline row serves both.

Families: compound screens (`flowzoo.compound_eval`), single-cell
perturbation screens (`flowzoo.perturbation_eval`), rotated letters
(`flowzoo.letters_eval`), single-cell crops (`flowzoo.image_eval`) and
families of Gaussians (`flowzoo.gaussians_eval`).
"""

from __future__ import annotations

from types import ModuleType

from flowzoo import compound_eval, gaussians_eval, image_eval, letters_eval, perturbation_eval

FAMILIES = (compound_eval, perturbation_eval, letters_eval, image_eval, gaussians_eval)


def for_config(config) -> ModuleType | None:
  """The evaluation module of `config`'s dataset family, or None (generic metrics only)."""
  return next((m for m in FAMILIES if m.applies(config)), None)

"""Runs one experiment: `python -m experiments.run --config=NAME.py[:variant] --workdir=DIR`.

Intentionally kept short: parses flags and calls `train_and_evaluate`, or,
when the config has a non-empty `compare.sweep` (e.g. mixflow_bbbc021.py:
MixFlow vs CFM), runs that named sweep of the config file
(`flowzoo.sweep.run_named`) and prints its table. A bare config name
resolves in `experiments/configs/`; `--config.a.b=v` overrides a field (a
misspelt field is an error: configs are locked); `--config.model.name=X`
swaps a component first, so X's own fields can follow (`experiments.cli`).
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, plots).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Discard checkpoints in --workdir made with a different config.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.quiet_logging()
  config = _CONFIG.value
  if config.get("compare") and config.compare.sweep:
    from flowzoo.sweep import run_named  # after flag parsing: faster --help
    run_named(config, config_flags.get_config_filename(flags.FLAGS["config"]),
              config.compare.sweep, _WORKDIR.value, overwrite=_OVERWRITE.value)
    return
  from flowzoo.experiment import train_and_evaluate
  train_and_evaluate(config, _WORKDIR.value, overwrite=_OVERWRITE.value)


if __name__ == "__main__":
  sys.argv = cli.rewrite_argv(sys.argv)
  app.run(main)

"""Runs a named sweep of a config: `python -m experiments.sweep --config=NAME.py[:variant] --sweep=SWEEP --workdir=DIR`.

Flags only; the work is `flowzoo.sweep.run_named`. Sweeps live next to the
config they vary, as `sweeps()` in the config module (e.g.
mixflow_bbbc021.py: "methods", "modes", "pca_dim"). Each point runs in
`DIR/<point>/seed<k>`; the table goes to DIR/sweep.{md,json,csv,png} and,
with `--results=results/<config>.md`, into that results page.
`--config.a.b=v` overrides apply to every point.

    python -m experiments.sweep --config=mixflow_letters.py:runlocal --sweep=baseline \
        --seeds=0,1,2 --reference=cfm --workdir=/tmp/mixflow_letters_vs_cfm
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = cli.define_config_flag()
_SWEEP = flags.DEFINE_string("sweep", None, "Name of a grid in the config module's sweeps().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Root directory of the sweep's runs.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds, e.g. 0,1,2.")
_SPLIT = flags.DEFINE_string("split", "heldout", "Evaluation split tabulated.")
_REFERENCE = flags.DEFINE_string("reference", None,
                                 "Point the table's relative-change column compares to.")
_RESULTS = flags.DEFINE_string("results", None,
                               "results/<config>.md page to write the table into.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Discard checkpoints made with a different config.")
flags.mark_flags_as_required(["config", "sweep", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.quiet_logging()
  from flowzoo.sweep import run_named  # after flag parsing: faster --help
  run_named(_CONFIG.value, config_flags.get_config_filename(flags.FLAGS["config"]), _SWEEP.value,
            _WORKDIR.value, seeds=[int(s) for s in _SEEDS.value], split=_SPLIT.value,
            reference=_REFERENCE.value, overwrite=_OVERWRITE.value, results=_RESULTS.value,
            command=cli.command_line())


if __name__ == "__main__":
  cli.ORIGINAL_ARGV[:] = sys.argv
  sys.argv = cli.rewrite_argv(sys.argv)
  app.run(cli.one_line_errors(main))

"""Trains and evaluates one config: `python -m experiments.run --config=NAME.py[:variant] --workdir=DIR`.

Intentionally kept short: parses flags and calls `train_with_baselines`,
which trains this config and, when it lists learned baselines
(`config.baselines`, e.g. the main job's CFM twin), each of those beside it,
then prints one table. A bare config name resolves in `experiments/configs/`;
`--config.a.b=v` overrides a field (a misspelt field is an error: configs are
locked); `--config.model.name=X` swaps a component first, so X's own fields
can follow; `--config.baselines.<arm>=` switches an arm off. A finished run
of the same config is not evaluated again (`--reevaluate` forces it). Sweeps
are their own command, `experiments.sweep`. `--coordinator_address`,
`--num_processes` and `--process_id` make one run span several processes
(`flowzoo/distributed.py`).
"""

import sys

from absl import app, flags

from experiments import cli

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, plots).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Discard checkpoints in --workdir made with a different config.")
_RESULTS = flags.DEFINE_string("results", None,
                               "results/<config>.md page to write the run's table into.")
_REEVALUATE = flags.DEFINE_bool("reevaluate", False,
                                "Evaluate a finished run again instead of reusing its eval.json.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "Multi-process run: the coordinator's host:port (process 0 listens there); 'auto' detects "
    "a TPU slice, SLURM or Open MPI. Default: $JAX_COORDINATOR_ADDRESS, else one process.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Processes in the run (default $JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's index, 0 first (default $JAX_PROCESS_ID).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.quiet_logging()
  from flowzoo import distributed  # pylint: disable=import-outside-toplevel
  from flowzoo.experiment import train_with_baselines  # after flag parsing: faster --help
  # Before anything touches a device (flowzoo/distributed.py, BUILD.md "Multi-process").
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  train_with_baselines(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value,
                       reevaluate=_REEVALUATE.value, label=cli.config_label(),
                       results=_RESULTS.value, command=cli.command_line())


if __name__ == "__main__":
  cli.ORIGINAL_ARGV[:] = sys.argv
  sys.argv = cli.rewrite_argv(sys.argv)
  app.run(cli.one_line_errors(main))

"""Scores finished perturbation runs and the baselines with PerturBench's metrics; prints one table.

    python -m experiments.perturbench_eval --workdir=/tmp/pf --workdir=/tmp/mixflow [--split=heldout]

Every `--workdir` is a finished `experiments.run` directory of an
`anndata_perturbations` config (config.json + samples.npz) on the same task;
the table (runs + every applicable baseline) is printed and written to
`<first workdir>/perturbench.{txt,json}`. Flags only; the work is
`flowzoo.perturbation_eval.report`. Each run also writes its generated
cells as `<workdir>/generated.h5ad` here if it has none yet.
"""

import json
from pathlib import Path

from absl import app, flags

_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "Finished run directories (repeatable).")
_SPLIT = flags.DEFINE_string("split", "heldout", "Evaluation split to score.")
_MAX_CELLS = flags.DEFINE_integer("max_cells", 1000, "Cells per condition used by the metrics.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from flowzoo import generated_cells, perturbation_eval  # after flag parsing: faster --help
  for w in _WORKDIRS.value:
    if not (Path(w) / generated_cells.FILE).is_file():
      config, samples = perturbation_eval.load_run(w)
      generated_cells.write_run(w, config, samples)
  table, scores = perturbation_eval.report(_WORKDIRS.value, split=_SPLIT.value,
                                             max_cells=_MAX_CELLS.value)
  print(f"PerturBench metrics on the {_SPLIT.value!r} split (mean over conditions; ranks within "
        "cell lines, 0 = best; ^ = higher is better)")
  print(table)
  out = Path(_WORKDIRS.value[0])
  (out / "perturbench.txt").write_text(table + "\n")
  (out / "perturbench.json").write_text(json.dumps(scores, indent=2))


if __name__ == "__main__":
  app.run(main)

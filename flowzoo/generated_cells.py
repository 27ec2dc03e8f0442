"""Generated cells written back as `.h5ad`, next to the real ones they imitate.

A run on an AnnData perturbation dataset (`anndata_perturbations`) writes
`generated.h5ad`: X in gene space (PCA-space samples decoded with the
training PCA), `obs` with the condition, its perturbation, covariates (and
dose), its split and `kind` = "generated" or "real", and `uns["config"]` the
run's config as JSON text, so any AnnData tool (scanpy, PerturBench's
`Evaluation`) can compare the two without flowzoo.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import anndata
import numpy as np
import pandas as pd

from flowzoo.data import anndata_perturbations as ap

FILE = "generated.h5ad"


def dataset_kwargs(config: Mapping) -> dict:
  """`config["dataset"]` without its name, lists as tuples (as `load` takes them)."""
  section = dict(config["dataset"])
  section.pop("name", None)
  return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}


def generated_anndata(data: ap.PerturbationData, samples: Mapping[str, np.ndarray],
                      config: Mapping, *, include_real: bool = True) -> anndata.AnnData:
  """AnnData of generated (and real) cells.

  Args:
    data: the run's dataset (`anndata_perturbations.load`).
    samples: "split/condition" -> `[n, D]` generated cells in model space (the
      layout of a run's samples.npz).
    config: the run's config as a dict (stored in `uns["config"]`).
    include_real: also add the real cells of every generated condition.
  """
  names = list(data.populations.names)
  xs, rows = [], []
  cov_keys = [k for k in data.populations.covariates if k != "perturbation"]
  for key, cells in samples.items():
    split, _, name = key.partition("/")
    if name not in names:
      raise KeyError(f"generated cells for {name!r}, which is not a condition of the dataset.")
    k = names.index(name)
    parts = [("generated", data.to_genes(cells))]
    if include_real:
      parts.append(("real", data.gene_samples[k]))
    for kind, x in parts:
      xs.append(np.asarray(x, np.float32))
      meta = {"condition": name, "perturbation": data.conditions[k].perturbation,
              "split": split, "kind": kind}
      meta.update({c: data.populations.covariates[c][k] for c in cov_keys})
      rows += [meta] * len(x)
  if not xs:
    raise ValueError("no generated cells to write.")
  obs = pd.DataFrame(rows, index=[f"cell{i}" for i in range(len(rows))]).astype("category")
  adata = anndata.AnnData(X=np.concatenate(xs), obs=obs, var=pd.DataFrame(index=list(data.genes)))
  adata.uns["config"] = json.dumps(dict(config), sort_keys=True, default=str)
  adata.uns["dataset_info"] = data.populations.info
  return adata


def write_run(workdir: str | Path, config: Mapping, samples: Mapping[str, np.ndarray]
              ) -> Path | None:
  """Writes `workdir/generated.h5ad` for an `anndata_perturbations` run; None otherwise.

  Called by `perturbation_eval.after_evaluation` (the run's hook) and by
  `experiments.perturbench_eval` for runs that predate the hook.
  """
  config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  if config["dataset"]["name"] != ap.NAME or not samples:
    return None
  data = ap.load_cached(**dataset_kwargs(config))
  path = Path(workdir) / FILE
  tmp = path.with_name("generated.tmp.h5ad")  # renamed when complete
  generated_anndata(data, samples, config).write_h5ad(tmp)
  tmp.replace(path)
  return path

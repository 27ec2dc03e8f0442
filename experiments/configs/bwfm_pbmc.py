"""BW-FM on single-cell Gaussians (WFM §4.1.2, App. F.1, Table 2 rows seqFISH / scRNA-seq).

Default: metacell Gaussians of scanpy's bundled pbmc68k_reduced (a cell and its
11 nearest same-label neighbours in the top 8 PCs; 9 cell-type labels with at
least 12 cells, 692 Gaussians), generated conditionally on the cell type with
classifier-free guidance dropout (WFM Fig. S3). Needs the `scanpy` extra (the
file is read from the installed wheel with h5py, scanpy is never imported) or
`--config.dataset.path=<file.h5ad>`.

Variant "seqfish": spatial niches of the seqFISH cortex (k = 16 nearest spatial
neighbours, 8 expression PCs; ../shared/data/seqfish_cortex), unconditional.
"runlocal" (comma-separated with a dataset variant) shrinks training to CPU
minutes. Baselines as in bwfm_spiral.py: `--config.method.geometry=bw_euclidean`
or `=frobenius`; `experiments.sweep --sweep=geometry` runs all three.
"paper" sets WFM App. E.1's protocol, as bwfm_spiral.py's `:paper` does
(`bwfm_spiral.paper_sections`: separate 6 x 1024 ReLU MLPs with skip
connections and LayerNorm, lr 2e-4 decayed 0.97 per 1000 steps, 100,000 steps,
no EMA, rounded matching at 0.002 / 200 on the max-scaled cost, per-step SPD
projection of the baselines); "paper,runlocal" is its CPU-sized twin. WFM
Table 2 (BW-FM (R) / (E) / Frobenius): scRNA-seq (32-D) 1.31 / 2.74 / 3.21,
seqFISH (16-D, mouse gut tube) 0.311 / 0.531 / 0.682; the data here are other
(8-D pbmc68k metacells, 8-D seqFISH cortex niches), so only the ordering of
the columns compares. Not yet run:

    python -m experiments.sweep --config=bwfm_pbmc.py:paper --sweep=geometry --seeds=0 \
        --split=train --workdir=DIR

    python -m experiments.run --config=bwfm_pbmc.py --workdir=/tmp/bwfm_pbmc
    python -m experiments.run --config=bwfm_pbmc.py:runlocal --workdir=/tmp/bwfm_pbmc_local
    python -m experiments.run --config=bwfm_pbmc.py:seqfish,runlocal --workdir=/tmp/bwfm_niches

Expected (`bw_min_w2`, runlocal, seed 0, one shared network at the time of
measurement), BW-FM (R) / (E) / Frobenius: pbmc68k 0.2183 / 0.6393 / 0.2595;
seqFISH 1.339 / 1.610 / 1.473.
"""

from pathlib import Path

from experiments.configs import bwfm_spiral, common
from experiments.configs.bwfm_spiral import sweeps  # noqa: F401  (same geometry sweep)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
VARIANTS = ("pbmc", "seqfish")


def get_config(arg: str | None = None):
  tokens = [a for a in (arg or "").split(",") if a]
  data = [a for a in tokens if a in VARIANTS]
  if ([a for a in tokens if a not in VARIANTS and a not in bwfm_spiral.SIZES]
      or len(data) > 1 or len(set(tokens)) != len(tokens)):
    raise ValueError(f"bwfm_pbmc: bad variant {arg!r}; use at most one of {VARIANTS} plus "
                     "optionally 'paper' and 'runlocal', comma-separated.")
  seqfish = data == ["seqfish"]
  c = common.base_config()
  if seqfish:
    c.dataset = dict(name="seqfish_niches", path=str(SHARED_DATA / "seqfish_cortex"), dim=8,
                     k=16, ridge=1e-3)
  else:
    c.dataset = dict(name="pbmc_metacells", path="", label_key="bulk_labels", dim=8, k=12,
                     ridge=1e-3)
  bwfm_spiral.bwfm_sections(c, conditional=not seqfish)  # labels: pairs within a label
  c.eval.max_samples = 1000
  if "paper" in tokens:
    bwfm_spiral.paper_sections(c)
  if "runlocal" in tokens:
    # The all-pairs Fréchet cost (batch^2 eigendecompositions of 8 x 8 matrices)
    # dominates a step on CPU: batch 64 is ~4x cheaper than 128.
    c.data.batch_size = 64
    c.data.populations_per_batch = 1 if seqfish else 64
    c.model.hidden = (256, 256, 256)
    c.train.steps = 3000
    c.train.steps_per_dispatch = 250
    c.train.log_every = 500
    c.train.ckpt_every = 1500
    if "paper" not in tokens:  # (the paper's recipe keeps its OT setting and no EMA)
      c.coupling.max_iterations = 100
      c.train.ema_decay = 0.99
    c.eval.max_samples = 500
  return common.finalize(c)

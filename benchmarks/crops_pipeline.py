"""Crops pipeline: memory and throughput as the dataset grows (1k, 10k, 100k crops).

The 843 real BBBC021 crops (../shared/data/bbbc021_crops) are resized once to
32 x 32 x 3 uint16 and tiled: copy t of the set becomes plate "T<t>", written
as .npy files plus an index CSV in a temporary folder (6 KB a crop; 100k
crops take ~0.6 GB as .npy and as much again as array_record), then converted
with `build_crops_dataset`. Each size is streamed in a fresh subprocess
(`--stream`), so peaks do not carry over: `--batches` batches of
`--batch_size` with `--workers` grain worker processes, after 5 warm-up
batches. Peak RSS is sampled every 50 ms (psutil) as the sum over the
process and its workers; `ru_maxrss` of the process itself is printed too.

    python benchmarks/crops_pipeline.py [--sizes 1000 10000 100000] [--batches 200] \\
        [--batch_size 64] [--workers 2] [--work_dir DIR] [--keep]

Measured on the shared 2-core CPU (2026-11-30, other jobs running: load
average 5, so batches/s is noisy), `python benchmarks/crops_pipeline.py`
(200 batches of 64, 2 workers, 32 x 32 x 3 uint16):

  N=1000: wrote .npy 0.5 s, built TFDS 3.4 s
  N=10000: wrote .npy 2.9 s, built TFDS 13.7 s
  N=100000: wrote .npy 40.0 s, built TFDS 132.2 s
   N crops  disk MB  batches/s  peak RSS MB (all procs)  main ru_maxrss MB
      1000        6       12.8                     1121                970
     10000       54       20.3                     1123                970
    100000      541       13.6                     1132                970

Peak memory is flat in N (+11 MB for 100x the crops: the grain iterator and
the metadata). It is the main process, which imports flowzoo and so jax
(~970 MB here), plus two workers of ~75 MB each that import only numpy,
grain and tensorflow_datasets. Per batch (in-process profile) the time goes
to TFDS's record decoding (~1/3), grain's index shuffle (~1/10: 250 us per
index on this loaded CPU) and normalisation.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "bbbc021_crops"


def write_tiled(n: int, root: Path, crops: np.ndarray, meta) -> Path:
  """`n` crops tiled from the real set, one plate per copy; returns the index CSV."""
  import pandas as pd  # pylint: disable=import-outside-toplevel
  (root / "crops").mkdir(parents=True, exist_ok=True)
  rows = []
  for i in range(n):
    j, tile = i % len(crops), i // len(crops)
    name = f"crops/{i}.npy"
    np.save(root / name, crops[j])
    rows.append({"path": name, "plate": f"T{tile}", "well": meta["well"][j],
                 "compound": meta["compound"][j], "dose": meta["dose"][j]})
  pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
  return root / "index.csv"


def build_all(sizes, work_dir: Path) -> dict[int, Path]:
  from flowzoo.data import crops_index, crops_tfds  # pylint: disable=import-outside-toplevel
  index = crops_index.read_crops_index(REAL / "crops_index.csv")
  t = index.table
  crops = np.stack([crops_tfds.prepare_crop(np.load(p), 32, np.dtype(np.uint16))
                    for p in t["path"]])
  meta = {"well": t["well"].tolist(), "compound": t["compound"].tolist(),
          "dose": t["dose"].tolist()}
  paths = {}
  for n in sizes:
    t0 = time.perf_counter()
    csv = write_tiled(n, work_dir / str(n), crops, meta)
    t1 = time.perf_counter()
    paths[n] = crops_tfds.build_crops_dataset(csv, work_dir / str(n) / "tfds")
    print(f"N={n}: wrote .npy {t1 - t0:.1f} s, built TFDS {time.perf_counter() - t1:.1f} s",
          flush=True)
  return paths


def _tree_rss(proc) -> int:
  total = 0
  for p in [proc] + proc.children(recursive=True):
    try:
      total += p.memory_info().rss
    except Exception:  # pylint: disable=broad-except  (a worker exiting)
      pass
  return total


def stream(path: str, batches: int, batch_size: int, workers: int) -> dict:
  """Streams batches from one dataset; returns throughput and peak memory."""
  import psutil  # pylint: disable=import-outside-toplevel
  from flowzoo.data.crops_pipeline import CropsPipeline  # pylint: disable=import-outside-toplevel
  proc, peak, done = psutil.Process(), [0], threading.Event()

  def sample():
    while not done.is_set():
      peak[0] = max(peak[0], _tree_rss(proc))
      time.sleep(0.05)

  threading.Thread(target=sample, daemon=True).start()
  pipe = CropsPipeline(path, batch_size=batch_size, seed=0, worker_count=workers)
  it = pipe.iterator()
  for _ in range(5):   # worker start-up and first reads
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    b = next(it)
  dt = time.perf_counter() - t0
  peak_tree = max(peak[0], _tree_rss(proc))
  it.close()
  done.set()
  assert b["x1"].shape[0] == batch_size
  return {"batches_per_s": batches / dt, "peak_rss_tree_mb": peak_tree / 2**20,
          "maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
  p.add_argument("--batches", type=int, default=200)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--work_dir", default=None, help="default: a temporary folder, deleted after")
  p.add_argument("--keep", action="store_true", help="keep the work dir")
  p.add_argument("--stream", default=None, help=argparse.SUPPRESS)  # the per-N subprocess
  a = p.parse_args()
  if a.stream:
    print(json.dumps(stream(a.stream, a.batches, a.batch_size, a.workers)))
    return
  if not (REAL / "crops_index.csv").is_file():
    sys.exit(f"needs the real crops at {REAL}")
  work_dir = Path(a.work_dir or tempfile.mkdtemp(prefix="crops_bench_"))
  try:
    paths = build_all(a.sizes, work_dir)
    print(f"{'N crops':>8} {'disk MB':>8} {'batches/s':>10} {'peak RSS MB (all procs)':>24} "
          f"{'main ru_maxrss MB':>18}")
    for n, path in paths.items():
      out = subprocess.run(
          [sys.executable, __file__, "--stream", str(path), "--batches", str(a.batches),
           "--batch_size", str(a.batch_size), "--workers", str(a.workers)],
          check=True, capture_output=True, text=True, cwd=REPO)
      r = json.loads(out.stdout.strip().splitlines()[-1])
      disk = sum(f.stat().st_size for f in Path(path).iterdir()) / 2**20
      print(f"{n:>8} {disk:>8.0f} {r['batches_per_s']:>10.1f} {r['peak_rss_tree_mb']:>24.0f} "
            f"{r['maxrss_self_mb']:>18.0f}", flush=True)
  finally:
    if not a.keep:
      shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
  main()

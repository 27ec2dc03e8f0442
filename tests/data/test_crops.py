"""Crop datasets: index validation, the TFDS round trip and the grain pipeline.

Tiny synthetic crops (8 x 8 x 3 uint16, two plates) written to tmp_path; one
test converts the real BBBC021 crops of ../shared/data if they are present.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tensorflow_datasets", reason="needs the 'images' extra")
pytest.importorskip("grain", reason="needs the 'images' extra")

from flowzoo.data import crops_index, crops_pipeline, crops_tfds  # noqa: E402
from tests.helpers import write_crops  # noqa: E402

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bbbc021_crops"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp("crops")
  csv = write_crops(root)
  path = crops_tfds.build_crops_dataset(csv, root / "tfds", stats_crops=10_000, stats_pixels=64)
  return csv, path


def read_split(path, split):
  src = crops_tfds.open_builder(path).as_data_source(split=split)
  return src.__getitems__(list(range(len(src))))


def test_tfds_round_trip(built):
  csv, path = built
  index = crops_index.read_crops_index(csv)
  meta = crops_tfds.read_metadata(path)
  assert meta["conditions"] == ["aphid@0.5uM", "taxol@1uM", "taxol@3uM"]
  assert meta["plates"] == ["P1", "P2"] and meta["image_shape"] == [8, 8, 3]
  assert meta["dtype"] == "uint16"
  t = index.table
  for split, controls in (("train", False), ("test", False), ("control_train", True),
                          ("control_test", True)):
    rows = index.split_rows(split.removeprefix("control_"), controls=controls)
    recs = read_split(path, split)
    assert len(recs) == len(rows) == meta["splits"][split]
    for r in recs:
      src = t.iloc[r["row"]]
      np.testing.assert_array_equal(r["image"], np.load(src["path"]))
      assert meta["plates"][r["plate"]] == src["plate"]
      assert r["compound"].decode() == src["compound"] and r["dose"] == src["dose"]
      assert r["condition"] == src["condition"]
  # Controls are stored plate by plate, as the stored ranges say.
  recs = read_split(path, "control_train")
  for p, (start, count) in enumerate(meta["control_plate_ranges"]["control_train"]):
    assert [r["plate"] for r in recs[start:start + count]] == [p] * count
  # Percentiles of all training pixels (the subsample covers everything here).
  train = t[t["split"] == "train"]
  pixels = np.concatenate([np.load(p).reshape(-1, 3) for p in train["path"]])
  np.testing.assert_allclose(meta["normalisation"]["low"], np.percentile(pixels, 0.1, axis=0))
  np.testing.assert_allclose(meta["normalisation"]["high"], np.percentile(pixels, 99.9, axis=0))


def test_rebuild_only_when_inputs_change(tmp_path):
  csv = write_crops(tmp_path, per_group=3, plates=("P1",))
  path = crops_tfds.build_crops_dataset(csv, tmp_path / "tfds", test_fraction=0.34)
  stamp = (path / "metadata.json").stat().st_mtime_ns
  assert crops_tfds.build_crops_dataset(csv, tmp_path / "tfds", test_fraction=0.34) == path
  assert (path / "metadata.json").stat().st_mtime_ns == stamp  # reused
  first = json.loads((path / "metadata.json").read_text())["fingerprint"]
  crops_tfds.build_crops_dataset(csv, tmp_path / "tfds", test_fraction=0.34, image_size=4)
  assert crops_tfds.build_crops_dataset(csv, tmp_path / "tfds", test_fraction=0.0,
                                        control_test_fraction=0.0) == path
  assert json.loads((path / "metadata.json").read_text())["fingerprint"] != first  # rebuilt
  assert "test" not in crops_tfds.read_metadata(path)["splits"]


def _edit(csv: Path, fn) -> Path:
  t = pd.read_csv(csv, dtype=str, keep_default_na=False)
  t = fn(t)
  t.to_csv(csv, index=False)
  return csv


def _bad_shape(t, root):
  np.save(root / t["path"][5], np.zeros((9, 8, 3), np.uint16))
  return t


@pytest.mark.parametrize("edit, error, match", [
    (lambda t, r: t.assign(path=t["path"].where(t.index != 3, "crops/gone.npy")),
     FileNotFoundError, r"row 3 .*gone\.npy.*does not exist"),
    (_bad_shape, ValueError, r"mixed shapes.*\(8, 8, 3\).*row 5\) is \(9, 8, 3\)"),
    (lambda t, r: t[~((t["plate"] == "P2") & (t["compound"] == "DMSO"))],
     ValueError, r"plate 'P2' has \d+ treated cells but no controls"),
    (lambda t, r: t.assign(dose=t["dose"].where(t.index != 7, "1,5 uM")),
     ValueError, r"row 7 .*non-numeric dose '1,5 uM'"),
    (lambda t, r: t.assign(split=np.where(t["compound"] == "DMSO", "test", "train")),
     ValueError, r"split 'test' has no treated cells.*empty split"),
    (lambda t, r: t.assign(split="nope"), ValueError, r"unknown split label.*'nope'.*valid"),
])
def test_bad_index_is_named(tmp_path, edit, error, match):
  csv = write_crops(tmp_path, per_group=2)
  _edit(csv, lambda t: edit(t, tmp_path))
  with pytest.raises(error, match=match):
    crops_index.read_crops_index(csv)


def test_bad_columns_and_empty_split(tmp_path):
  csv = write_crops(tmp_path, per_group=1)
  with pytest.raises(ValueError, match=r"\['conc'\].*not in the CSV; its columns: \['path'"):
    crops_index.read_crops_index(csv, columns={"dose": "conc"})
  with pytest.raises(ValueError, match=r"unknown field.*\['dosage'\]; valid fields"):
    crops_index.read_crops_index(csv, columns={"dosage": "dose"})
  # One cell per condition: nothing can be held out.
  with pytest.raises(ValueError, match="'test' split would be empty"):
    crops_index.read_crops_index(csv, test_fraction=0.2)


def test_nan_crop_is_named(tmp_path):
  csv = write_crops(tmp_path, per_group=2, dtype=np.float32)
  bad = pd.read_csv(csv)["path"][4]
  x = np.load(tmp_path / bad)
  x[0, 0, 1] = np.nan
  np.save(tmp_path / bad, x)
  with pytest.raises(ValueError, match=rf"row 4 .*{bad.split('/')[-1]}.*1 NaN/inf"):
    crops_tfds.build_crops_dataset(csv, tmp_path / "tfds", test_fraction=0.5)


def test_split_column_and_seeded_split(tmp_path):
  csv = write_crops(tmp_path, per_group=5, split=True)
  t = crops_index.read_crops_index(csv).table
  assert (t.loc[t["split"] == "test", "compound"] != "DMSO").all()
  assert (t["split"] == "test").sum() == 2 * 3   # the CSV's labels, as written
  csv2 = write_crops(tmp_path / "nosplit", per_group=5)
  a = crops_index.read_crops_index(csv2, test_fraction=0.4, seed=3).table
  b = crops_index.read_crops_index(csv2, test_fraction=0.4, seed=3).table
  assert (a["split"] == b["split"]).all()
  # 2 of 5 cells of each condition on each plate -> 4 of 10 per condition held out.
  held = a[~a["is_control"]].groupby("condition")["split"].apply(lambda s: (s == "test").sum())
  assert held.tolist() == [4, 4, 4]
  ctl = a[a["is_control"]].groupby("plate")["split"].apply(lambda s: (s == "test").sum())
  assert ctl.tolist() == [1, 1]   # control_test_fraction 0.2 of each plate's 5 controls


def pipe(path, **kw):
  kw.setdefault("batch_size", 8)
  return crops_pipeline.CropsPipeline(path, **kw)


def test_batch_convention_and_same_plate_pairing(built):
  _, path = built
  p = pipe(path, seed=1)
  b = p.batch(0)
  assert {k: v.shape for k, v in b.items()} == {
      "x1": (8, 8, 8, 3), "x0": (8, 8, 8, 3), "cond": (8, 3), "group": (8,)}
  assert b["x1"].dtype == b["x0"].dtype == b["cond"].dtype == np.float32
  assert b["group"].dtype == np.int32
  np.testing.assert_array_equal(b["cond"], p.descriptors[b["group"]])
  assert np.abs(b["x1"]).max() <= 1.0 and np.abs(b["x0"]).max() <= 1.0
  targets, controls = read_split(path, "train"), read_split(path, "control_train")
  for pairing, same in (("same_plate", True), ("other_plates", False)):
    for step in range(3):
      ids = pipe(path, seed=1, pairing=pairing).indices(step)
      t_plates = [targets[i]["plate"] for i in ids["target"]]
      s_plates = [controls[i]["plate"] for i in ids["source"]]
      assert (np.array(t_plates) == np.array(s_plates)).all() == same
      if not same:
        assert all(a != b for a, b in zip(t_plates, s_plates))


def test_other_plates_needs_two_plates(tmp_path):
  csv = write_crops(tmp_path, per_group=3, plates=("P1",))
  path = crops_tfds.build_crops_dataset(csv, tmp_path / "tfds")
  with pytest.raises(ValueError, match="other_plates.*2\\+ plates"):
    pipe(path, pairing="other_plates")


def test_normalisation_maps_percentiles_to_unit_interval():
  low, high = np.array([10.0, 0.0, 5.0], np.float32), np.array([20.0, 4.0, 6.0], np.float32)
  x = np.stack([low, high, (low + high) / 2, low - 7, high + 9]).reshape(5, 1, 3)
  y = crops_pipeline.normalise(x, low, high)
  np.testing.assert_allclose(y[:, 0], [[-1] * 3, [1] * 3, [0] * 3, [-1] * 3, [1] * 3], atol=1e-6)


def test_augmentation_preserves_pixel_values(built):
  x = np.random.default_rng(0).normal(size=(5, 5, 3))
  outs = [crops_pipeline.dihedral(x, k) for k in range(8)]
  for y in outs:
    np.testing.assert_array_equal(np.sort(y, axis=None), np.sort(x, axis=None))
  assert len({y.tobytes() for y in outs}) == 8   # the 8 symmetries differ
  _, path = built
  a, b = pipe(path, seed=2).batch(1), pipe(path, seed=2, augment=False).batch(1)
  for key in ("x1", "x0"):
    np.testing.assert_array_equal(np.sort(a[key].reshape(8, -1), axis=1),
                                  np.sort(b[key].reshape(8, -1), axis=1))
  assert not np.array_equal(a["x1"], b["x1"])


def test_seeded_shuffling_and_epochs(built):
  _, path = built
  n = crops_tfds.read_metadata(path)["splits"]["train"]
  a, b, c = pipe(path, seed=5), pipe(path, seed=5), pipe(path, seed=6)
  for step in range(2):
    for k, v in a.batch(step).items():
      np.testing.assert_array_equal(v, b.batch(step)[k])
  assert not np.array_equal(a.batch(0)["x1"], c.batch(0)["x1"])
  # An epoch visits every training cell once; the next one reshuffles.
  p = pipe(path, seed=5, batch_size=n)
  e0, e1 = p.indices(0)["target"], p.indices(1)["target"]
  assert sorted(e0) == sorted(e1) == list(range(n)) and list(e0) != list(e1)


def test_resume_from_iterator_state(built):
  _, path = built
  p = pipe(path, seed=3)
  it = p.iterator()
  next(it), next(it)
  state = it.get_state()
  expected = [next(it), next(it)]
  resumed = p.iterator()
  resumed.set_state(state)
  started = p.iterator(start_step=2)
  for want in expected:
    for got in (next(resumed), next(started)):
      for k in want:
        np.testing.assert_array_equal(got[k], want[k])
  np.testing.assert_array_equal(p.batch(3)["x0"], expected[1]["x0"])


def test_worker_process_gives_the_same_batches(built):
  _, path = built
  inline = list(pipe(path, seed=4).iterator(num_steps=3))
  it = pipe(path, seed=4, worker_count=1).iterator(num_steps=3)
  workers = list(it)
  it.close()
  assert len(workers) == 3
  for a, b in zip(inline, workers):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_process_shards_concatenate_to_global_batch(built):
  _, path = built
  full = pipe(path, seed=7).batch(2)
  shards = [pipe(path, seed=7, process_index=i, process_count=4).batch(2) for i in range(4)]
  for k in full:
    np.testing.assert_array_equal(np.concatenate([s[k] for s in shards]), full[k])
  with pytest.raises(ValueError, match="multiple of process_count=3"):
    pipe(path, process_count=3)


def test_load_split(built):
  _, path = built
  ev = crops_pipeline.load_split(path, "test")
  meta = crops_tfds.read_metadata(path)
  assert sorted(ev["x1"]) == meta["conditions"]
  assert sum(len(v) for v in ev["x1"].values()) == meta["splits"]["test"]
  assert sorted(ev["x0"]) == ["P1", "P2"]
  assert sum(len(v) for v in ev["x0"].values()) == meta["splits"]["control_test"]
  for name, x in ev["x1"].items():
    assert x.shape[1:] == (8, 8, 3) and x.dtype == np.float32 and np.abs(x).max() <= 1
    assert len(ev["x1_plates"][name]) == len(x) and ev["cond"][name].shape == (3,)


def test_real_bbbc021_crops(tmp_path):
  if not (REAL / "crops_index.csv").is_file():
    pytest.skip(f"real crops {REAL} are absent (../shared/data/bbbc021_crops)")
  path = crops_tfds.build_crops_dataset(REAL / "crops_index.csv", tmp_path, image_size=16,
                                        stats_crops=256)
  meta = crops_tfds.read_metadata(path)
  assert meta["conditions"] == ["cyclohexamide@15uM", "cyclohexamide@50uM"]
  assert meta["plates"] == ["Week4_27821"] and meta["image_shape"] == [16, 16, 3]
  assert sum(meta["splits"].values()) == 843
  b = pipe(path, batch_size=4).batch(0)
  assert b["x1"].shape == (4, 16, 16, 3) and np.isfinite(b["x1"]).all()

"""The main job's BBBC021 protocol: shipped data, same-plate pairing, loader options and errors."""

import hashlib
import logging

import jax
import numpy as np
import pandas as pd
import pytest

from flowzoo import evaluate as eval_lib
from flowzoo.data import bbbc021 as B
from flowzoo.data import splits
from flowzoo.data.populations import pack, sample_batch


def test_shipped_wells_and_descriptors_load_without_shared_data():
  pops = B.bbbc021_wells(num_validation=4)  # the package's own files: nothing in ../shared
  assert pops.event_shape == (189,) and pops.cond_dim == 173 and len(pops.names) == 35
  # 38 treated compounds; AZ-A/C/J/U have no SMILES (dropped, and said so);
  # "mevinolin/lovastatin" matches MorphoDiff's "mevinolin-lovastatin".
  assert "Dropped (no descriptor): ['AZ-A', 'AZ-C', 'AZ-J', 'AZ-U']" in pops.info
  assert "mevinolin/lovastatin" in pops.names and "wells_mad_robustize.csv.gz" in pops.info
  held = sorted(n for n, s in zip(pops.names, pops.splits) if s == "heldout")
  assert held == sorted(splits.IMPA_HELDOUT)
  assert "holding out" in pops.info and all(f"'{c}'" in pops.info for c in held)
  assert pops.splits.count("validation") == 4
  assert pops.samples[pops.names.index("DMSO")].shape == (330, 189)


def test_shipped_files_are_the_published_ones(shared_data):
  for shipped, original in ((B.WELLS_CSV, "bbbc021_wells/BBBC021_feature_selected_mad_robustize.csv"),
                            (B.DESCRIPTORS_CSV,
                             "bbbc021_splits/morphodiff/perturbation_embedding_bbbc021.csv")):
    import gzip  # pylint: disable=import-outside-toplevel
    assert (hashlib.sha256(gzip.open(shipped).read()).hexdigest()
            == hashlib.sha256((shared_data / original).read_bytes()).hexdigest())


def _plates_table(n_plates=3, wells=4, controls=2):
  """Feature 0 of every well is its plate's number, so a source's plate is readable."""
  rows = []
  for p in range(n_plates):
    for c in ("DMSO",) * controls + ("taxol",) * wells + ("AZ841",) * wells:
      rows.append(dict(plate=f"p{p}", compound=c, f0=float(p), f1=np.random.default_rng(len(rows)).normal()))
  meta = pd.DataFrame(rows)
  return meta[["f0", "f1"]].to_numpy(np.float32), meta[["plate", "compound"]]


def _pops(pairing, **kw):
  x, meta = _plates_table(**kw)
  return B.populations_from_rows(
      x, meta, source="t", descriptors="onehot", compound_key="compound", dose_key=None,
      plate_key="plate", moa_key=None, split="none", pairing=pairing)


@pytest.mark.parametrize("pairing", ["same_plate", "other_plates"])
def test_pairing_in_training_and_generation(pairing):
  pops = _pops(pairing)
  taxol = pops.names.index("taxol")
  batch = jax.jit(lambda r: sample_batch(pack(pops), r, np.array([taxol], np.int32),
                                         batch_size=512, populations_per_batch=1))(
                                             jax.random.key(0))
  same = np.asarray(batch["x0"][:, 0]) == np.asarray(batch["x1"][:, 0])
  assert same.all() if pairing == "same_plate" else not same.any()
  # Generation draws a plate per row as a real well of the compound, then its source.
  rows = eval_lib.condition_batch(pops, [taxol], [600], np.random.default_rng(0))
  plates, counts = np.unique(rows["x0"][:, 0], return_counts=True)
  assert set(plates) == {0.0, 1.0, 2.0} and counts.min() > 150  # every plate, ~evenly


def test_pooled_pairing_mixes_plates():
  pops = _pops("pooled")
  taxol = pops.names.index("taxol")
  batch = sample_batch(pack(pops), jax.random.key(0), np.array([taxol], np.int32),
                       batch_size=512, populations_per_batch=1)
  same = np.asarray(batch["x0"][:, 0]) == np.asarray(batch["x1"][:, 0])
  assert 0.2 < same.mean() < 0.5  # 1 in 3 plates by chance


def test_pairing_errors_name_the_plate():
  x, meta = _plates_table()
  meta = meta.copy()
  meta.loc[(meta.plate == "p1") & (meta.compound == "DMSO"), "compound"] = "AZ841"
  with pytest.raises(ValueError, match="plate 'p1' of condition .* has no control"):
    B.populations_from_rows(x, meta, source="t", descriptors="onehot", compound_key="compound",
                            dose_key=None, plate_key="plate", moa_key=None, split="none")
  with pytest.raises(ValueError, match="other-plate pairing needs control samples from 2"):
    _pops("other_plates", n_plates=1)
  with pytest.raises(ValueError, match="pairing must be one of"):
    _pops("nearby")


def test_descriptor_and_split_errors_name_the_mismatch(caplog):
  x, meta = _plates_table()
  kw = dict(source="t", compound_key="compound", dose_key=None, plate_key="plate", moa_key=None)
  other = pd.DataFrame(np.ones((2, 3)), index=["aspirin", "caffeine"])
  with pytest.raises(ValueError, match=r"no treated compound matches a row of the descriptor "
                                       r"table.*\['AZ841', 'taxol'\].*\['aspirin', 'caffeine'\]"):
    B.populations_from_rows(x, meta, descriptors=other, split="none", **kw)
  partial = pd.DataFrame(np.ones((1, 3)), index=["taxol"])
  with pytest.raises(ValueError, match=r"\['AZ841'\] that are not treated.*Dropped earlier for "
                                       r"having no descriptor"):
    B.populations_from_rows(x, meta, descriptors=partial, split="AZ841;taxol", **kw)
  table = pd.DataFrame([[1.0, 0.0], [0.0, 0.0]], index=["taxol", "AZ841"])
  with pytest.raises(ValueError, match=r"Unknown split 'aspirin': not one of .* nor a treated "
                                       r"compound.*\['AZ841', 'taxol'\]"):
    B.populations_from_rows(x, meta, descriptors=table, split="aspirin", **kw)
  with pytest.raises(ValueError, match=r"names compound\(s\) \['aspirin'\]"):
    B.populations_from_rows(x, meta, descriptors=table, split="taxol;aspirin", **kw)
  one = B.populations_from_rows(x, meta, descriptors=table, split="taxol", **kw)
  assert one.splits[one.names.index("taxol")] == "heldout"
  with caplog.at_level(logging.WARNING):
    B.populations_from_rows(x * 100.0, meta, descriptors=table, split="none", **kw)
  assert "['AZ841'] have an all-zero descriptor row" in caplog.text
  assert "look unscaled" in caplog.text


def test_plate_control_standardisation_and_control_value():
  x, meta = _plates_table(controls=3)
  x = x * 50.0 + 7.0
  meta = meta.replace({"compound": {"DMSO": "vehicle"}})
  pops = B.populations_from_rows(
      x, meta, source="t", descriptors="onehot", compound_key="compound", dose_key=None,
      plate_key="plate", moa_key=None, split="none", controls=("vehicle",),
      standardize="plate_controls")
  ctrl = pops.samples[pops.names.index("vehicle")]
  # Robust z-score against each plate's controls: their median is 0 on every plate.
  for p in range(3):
    np.testing.assert_allclose(np.median(ctrl[p * 3:(p + 1) * 3], 0), 0.0, atol=1e-5)
  assert not pops.descriptors[pops.names.index("vehicle")].any()  # the control's zero descriptor


def test_every_loader_argument_is_settable_from_the_command_line():
  # They used to fail with a bare AttributeError: None defaults were not config fields.
  from absl import flags  # pylint: disable=import-outside-toplevel
  from experiments import cli  # pylint: disable=import-outside-toplevel
  argv = ["prog", "--config=mixflow_bbbc021.py:runlocal", "--config.dataset.pca_components=50",
          "--config.dataset.descriptor_components=8", "--config.dataset.append_log_dose=False",
          "--config.dataset.splits_dir=/x", "--config.dataset.control_value=vehicle",
          "--config.dataset.standardize=plate_controls"]
  argv = cli.rewrite_argv(argv)
  fv = flags.FlagValues()
  cli.define_config_flag(flag_values=fv, sys_argv=argv)
  fv(argv)
  d = fv.config.dataset
  assert (d.pca_components, d.descriptor_components, d.append_log_dose, d.splits_dir,
          d.control_value, d.standardize) == (50, 8, False, "/x", "vehicle", "plate_controls")


def test_the_control_stays_the_control_after_a_descriptor_pca():
  from flowzoo import compound_baselines  # pylint: disable=import-outside-toplevel
  pops = B.bbbc021_wells(descriptor_components=10)
  dmso = pops.names.index("DMSO")
  assert np.any(pops.descriptors[dmso])  # the centred PCA moves the zero descriptor
  assert compound_baselines.is_control(pops, dmso)
  assert dmso not in compound_baselines.treated_ids(pops, ("train", "validation", "heldout"))
  assert len(compound_baselines.treated_ids(pops, ("train", "validation", "heldout"))) == 34

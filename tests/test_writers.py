"""The metrics log survives a kill mid-write: a torn last row is dropped, not fatal."""

import json

import pytest

from flowzoo.writers import MetricWriter


def _log(tmp_path, text):
  (tmp_path / "train_metrics.jsonl").write_text(text)


def _rows(tmp_path):
  return [json.loads(r) for r in (tmp_path / "train_metrics.jsonl").read_text().splitlines()]


def test_torn_last_line_is_dropped_and_reported(tmp_path, capsys):
  # A kill during the write of step 12's row (it used to raise JSONDecodeError).
  _log(tmp_path, '{"step": 4, "loss": 1.0}\n{"step": 8, "loss": 0.5}\n{"step": 12, "lo')
  writer = MetricWriter(tmp_path, start_step=8)
  writer.write(12, {"loss": 0.25})
  writer.close()
  assert _rows(tmp_path) == [{"step": 4, "loss": 1.0}, {"step": 8, "loss": 0.5},
                             {"step": 12, "loss": 0.25}]
  out = capsys.readouterr().out
  assert "train_metrics.jsonl: dropped a torn last line" in out and "'{\"step\": 12, \"lo'" in out


def test_rows_after_the_resumed_step_are_dropped(tmp_path, capsys):
  _log(tmp_path, '{"step": 4, "loss": 1.0}\n{"step": 8, "loss": 0.5}\n')
  MetricWriter(tmp_path, start_step=4).close()
  assert _rows(tmp_path) == [{"step": 4, "loss": 1.0}]
  assert "torn" not in capsys.readouterr().out


def test_damage_before_the_last_line_names_file_and_line(tmp_path):
  _log(tmp_path, '{"step": 4, "loss": 1.0}\n\x00\x00garbage\n{"step": 8, "loss": 0.5}\n')
  with pytest.raises(ValueError, match=r"train_metrics.jsonl, line 2, is not a metrics row: "
                                       r".*--overwrite"):
    MetricWriter(tmp_path, start_step=8)


def read_events(logdir):
  """Every `Event` in the TensorBoard event files under `logdir`.

  `tensorboard` (the `viz` extra) is not a test dependency, so the TFRecord
  framing is read here and each record parsed with tensorboardX's protos:
  8-byte length, 4-byte CRC, the record, 4-byte CRC.
  """
  import struct  # pylint: disable=import-outside-toplevel
  from tensorboardX.proto.event_pb2 import Event  # pylint: disable=import-outside-toplevel
  events = []
  for path in sorted(logdir.rglob("events.out.tfevents.*")):
    data = path.read_bytes()
    i = 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i:i + 8])
      events.append(Event.FromString(data[i + 12:i + 12 + n]))
      i += 12 + n + 4
  return events


def test_tensorboard_has_eval_selection_images_and_hparams(tmp_path):
  from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData  # pylint: disable=import-outside-toplevel
  from flowzoo.experiment import train_and_evaluate  # pylint: disable=import-outside-toplevel
  from tests.helpers import tiny_letters_config  # pylint: disable=import-outside-toplevel
  config = tiny_letters_config(**{"eval.splits": ("train", "heldout")})
  results = train_and_evaluate(config, tmp_path)
  scalars, images, hparams = {}, set(), None
  for e in read_events(tmp_path / "tensorboard"):
    for v in e.summary.value:
      if v.HasField("image"):
        images.add(v.tag)
        assert v.image.height > 100 and v.image.encoded_image_string[:4] == b"\x89PNG"
      elif v.metadata.plugin_data.plugin_name == "hparams":
        data = HParamsPluginData.FromString(v.metadata.plugin_data.content)
        if data.HasField("session_start_info"):
          hparams = data.session_start_info.hparams
      elif v.HasField("simple_value"):
        scalars.setdefault(v.tag, {})[e.step] = v.simple_value
  assert {"train/loss", "train/grad_norm", "train/param_norm", "train/steps_per_s"} <= set(scalars)
  selection = json.loads((tmp_path / "selection.json").read_text())
  for split in ("train", "heldout"):  # at the step of the checkpoint evaluated
    for m in ("w1", "w2", "mmd", "energy"):
      assert scalars[f"eval/{split}/{m}"] == {
          selection["selected_step"]: pytest.approx(results[m][split]["mean"])}
  assert scalars["selection/heldout/w2"] == {int(k): pytest.approx(v)
                                             for k, v in selection["scores"].items()}
  assert {"train/real_vs_generated", "heldout/real_vs_generated", "heldout/flow",
          "train/metrics", "heldout/metrics"} <= images
  assert hparams is not None, "no hparams session"
  assert hparams["model.hidden"].string_value == "(16, 16)"
  assert hparams["optim.lr"].number_value == pytest.approx(config.optim.lr)
  assert hparams["method.name"].string_value == "cfm"

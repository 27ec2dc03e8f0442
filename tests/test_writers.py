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

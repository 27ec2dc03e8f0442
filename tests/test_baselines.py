"""Mean-shift baselines on a constructed case with hand-computed means."""

import numpy as np
import pytest

from flowzoo.baselines import Baselines
from flowzoo.data.perturbation_encoding import Condition


def cond(label, ctx):
  return Condition(label, () if label == "ctrl" else tuple(label.split("+")), (ctx,))


@pytest.fixture
def base():
  # Two genes; every condition's cells are constant rows, so means are exact.
  spec = [  # (label, context, mean, split)
      ("ctrl", "x", [1.0, 1.0], "train"),
      ("A", "x", [3.0, 1.0], "train"),        # effect [2, 0]
      ("B", "x", [1.0, 0.0], "train"),        # effect [0, -1]
      ("A+B", "x", [4.0, 4.0], "heldout"),
      ("C", "x", [9.0, 9.0], "validation"),   # not training: ignored by every baseline
      ("ctrl", "y", [0.0, 2.0], "train"),
      ("A", "y", [4.0, 2.0], "train"),        # effect [4, 0]
      ("B", "y", [0.0, 5.0], "heldout"),
      ("ctrl", "z", [5.0, 5.0], "train"),
      ("B", "z", [5.0, 8.0], "train"),        # effect [0, 3]
  ]
  conditions = [cond(l, c) for l, c, _, _ in spec]
  ctrl_rows = np.array([[1.0, 1.0], [1.0, 3.0], [1.0, -1.0]])  # x control: mean [1, 1]
  cells = []
  for (l, c, m, _) in spec:
    if (l, c) == ("ctrl", "x"):
      cells.append(ctrl_rows)
    else:
      cells.append(np.tile(m, (4, 1)))
  control_index = [0, 0, 0, 0, 0, 5, 5, 5, 8, 8]
  return Baselines(conditions, cells, [s for *_, s in spec], control_index), ctrl_rows


def test_shifts_by_hand(base):
  b, ctrl = base
  np.testing.assert_array_equal(b.shift("A+B|x", "control"), [0, 0])
  # train_mean in x: mean of A [2, 0] and B [0, -1] (C is validation) = [1, -0.5].
  np.testing.assert_allclose(b.shift("A+B|x", "train_mean"), [1.0, -0.5])
  # additive: A [2, 0] + B [0, -1].
  np.testing.assert_allclose(b.shift("A+B|x", "additive"), [2.0, -1.0])
  # cross_covariate for B in y: B's effect in x [0, -1] and in z [0, 3] -> [0, 1].
  np.testing.assert_allclose(b.shift("B|y", "cross_covariate"), [0.0, 1.0])
  np.testing.assert_allclose(b.shift("B|y", "train_mean"), [4.0, 0.0])  # only A trains in y


def test_predictions_shift_every_control_cell(base):
  b, ctrl = base
  np.testing.assert_allclose(b.predict("A+B|x", "additive"), ctrl + [2.0, -1.0])
  np.testing.assert_allclose(b.predict("A+B|x", "control"), ctrl)
  assert b.predict("A+B|x", "additive").mean(0) == pytest.approx([3.0, 0.0])


def test_undefined_baselines_say_why(base):
  b, _ = base
  with pytest.raises(ValueError, match="'B\\|y' is not a combination"):
    b.shift("B|y", "additive")
  with pytest.raises(ValueError, match="'A\\+B' is not a training condition in any context"):
    b.shift("A+B|x", "cross_covariate")
  with pytest.raises(KeyError, match="Unknown baseline 'mean'"):
    b.shift("A+B|x", "mean")
  assert b.applicable(["A+B|x"]) == ["control", "train_mean", "additive"]
  assert b.applicable(["B|y"]) == ["control", "train_mean", "cross_covariate"]
  assert b.applicable(["A+B|x", "B|y"]) == ["control", "train_mean"]

"""Rotated-letter silhouettes: the synthetic benchmark of MixFlow §5.1.

Following Meta Flow Matching (Atanackovic et al. 2024), every (letter,
rotation) pair is one condition i with target population rho_i = p_1(x | i)
supported on the rendered silhouette of the letter, rotated by
angle_r = 2 pi r / R, r = 0..R-1 (MixFlow §5.1). Its descriptor y_i is the
one-hot letter code concatenated with the normalised rotation r / R in [0, 1).

Sampling. Each letter is rendered once (offline, with Pillow and the DejaVu
Sans Bold font bundled with matplotlib) into a `resolution`^2 binary mask.
A point is a foreground pixel drawn uniformly plus uniform sub-pixel jitter,
so samples are uniform on the silhouette's area. Points are centred on the
silhouette's centroid, scaled so that the longer side of the letter's
bounding box is 2 * `extent` long, and then rotated by angle_r: rotating
points is exact, unlike resampling a rotated raster.

Scale. MixFlow §5.1 follows Meta Flow Matching, whose letters generator
(Atanackovic et al. 2024, `letters_dataloader.py`, `char_sampler`) maps each
letter's bounding box to [-1, 1] on its longer side and multiplies by 3, so
`extent` = 3 is the default. The scale is part of the benchmark: the
CFM base N(0, I) is about as wide as a letter at the earlier font-unit scale
(letters ~1.45 units tall, extent ~0.73), and much narrower than one of
extent 3. Table 1's magnitudes fit the larger scale: its CFM distances are
0.57-0.84 in the two columns of W2 size (the printed column labels disagree
with the text), 4-5 times flowzoo's font-unit CFM held-out W2 (0.155 on S,
0.157 on H), about the ratio of the two scales (4.1). `extent=None` keeps
the font-unit scale (one unit = half the font size), the scale of flowzoo's
earlier letters results (git history).

Copies. The paper renders several copies of each silhouette in different
fixed colours, only to obtain several samples per condition; the colours are
not in the descriptor. Here the 2-D points carry no colour, so a copy is an
independent draw of `points_per_copy` points from the silhouette, and a
condition's population has `copies * points_per_copy` points.

Splits (MixFlow §5.1, "rotation interpolation"): the even-indexed rotations
of every letter are "train"; the odd-indexed rotations of `val_letter` are
"heldout". Odd rotations of the other letters are not part of the paper's
set-up and are not created. `val_letter` may name several letters (e.g.
"LTAE"): the training set is the same for every choice, so hyper-parameters
can be chosen on the held-out rotations of letters other than the reported
S and H. There is no "validation" split: the paper selects
checkpoints on the held-out rotations of `val_letter` (its "validation set"),
which are exactly the "heldout" conditions here.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from flowzoo.data.populations import Populations
from flowzoo.registry import DATASETS

# The font is rendered at this fraction of the resolution: DejaVu Sans Bold
# capitals are ~0.73 em tall and at most ~1 em wide, so they fit the canvas.
FONT_FRACTION = 0.8
MIN_RESOLUTION = 16
# Half the longer bounding-box side of a letter in sample units: Meta Flow
# Matching's letters (which MixFlow §5.1 follows) span [-3, 3] on that side.
EXTENT = 3.0


@dataclasses.dataclass(frozen=True)
class Glyph:
  """A rendered letter silhouette.

  Attributes:
    char: the rendered character.
    mask: `[resolution, resolution]` bool, True on foreground pixels
      (row 0 at the top of the image).
    centre: `(col, row)` centroid of the foreground area in pixel units,
      the point that maps to the origin.
    scale: pixels per unit of the sample coordinates (depends on `extent`).
  """

  char: str
  mask: np.ndarray
  centre: tuple[float, float]
  scale: float


def _font_path() -> Path | None:
  """matplotlib's bundled DejaVu Sans Bold: the same glyphs on every machine."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
  return path if path.is_file() else None


@functools.lru_cache(maxsize=None)
def _font(size: int) -> tuple[ImageFont.FreeTypeFont, str]:
  path = _font_path()
  if path is not None:
    return ImageFont.truetype(str(path), size), path.name
  # Pillow >= 10.1: a scalable built-in font (glyph shapes then differ from DejaVu).
  return ImageFont.load_default(size=size), "Pillow default font"


def font_name(resolution: int = 64) -> str:
  """Name of the font used for rendering (for logs and `info`)."""
  return _font(int(round(FONT_FRACTION * resolution)))[1]


@functools.lru_cache(maxsize=None)
def render_glyph(char: str, resolution: int = 64, extent: float | None = EXTENT) -> Glyph:
  """Renders `char` centred in a `resolution`^2 binary mask.

  Args:
    char: one character.
    resolution: side of the mask in pixels.
    extent: half the longer side of the letter's bounding box in sample
      units, or None for font units (one unit = half the font size).

  Raises:
    ValueError: if `char` is not one character, renders to no pixels (e.g. a
      space) or does not fit the canvas.
  """
  if not isinstance(char, str) or len(char) != 1:
    raise ValueError(f"render_glyph: expected a single character, got {char!r}.")
  size = int(round(FONT_FRACTION * resolution))
  font, _ = _font(size)
  image = Image.new("L", (resolution, resolution), 0)
  draw = ImageDraw.Draw(image)
  left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
  if right - left > resolution - 2 or bottom - top > resolution - 2:
    raise ValueError(
        f"letter {char!r} ({right - left}x{bottom - top} px) does not fit a "
        f"{resolution}x{resolution} canvas.")
  # Centre the ink bounding box on the canvas.
  origin = ((resolution - (right - left)) / 2 - left, (resolution - (bottom - top)) / 2 - top)
  draw.text(origin, char, fill=255, font=font)
  mask = np.asarray(image) >= 128
  if not mask.any():
    raise ValueError(f"letter {char!r} renders to an empty silhouette.")
  mask.setflags(write=False)
  rows, cols = np.nonzero(mask)
  centre = (float(cols.mean() + 0.5), float(rows.mean() + 0.5))
  if extent is None:
    scale = size / 2
  else:
    longer = max(cols.max() - cols.min(), rows.max() - rows.min()) + 1
    scale = longer / 2 / extent
  return Glyph(char=char, mask=mask, centre=centre, scale=float(scale))


def sample_glyph(glyph: Glyph, n: int, rng: np.random.Generator) -> np.ndarray:
  """`[n, 2]` points uniform on the (unrotated) silhouette, y pointing up."""
  rows, cols = np.nonzero(glyph.mask)
  idx = rng.integers(0, rows.size, n)
  jitter = rng.random((n, 2))
  x = (cols[idx] + jitter[:, 0] - glyph.centre[0]) / glyph.scale
  # Image rows grow downwards; flip so the letter stands upright in (x, y).
  y = -(rows[idx] + jitter[:, 1] - glyph.centre[1]) / glyph.scale
  return np.stack([x, y], axis=1)


def rotate(points: np.ndarray, angle: float) -> np.ndarray:
  """Rotates `[n, 2]` points counter-clockwise by `angle` radians about 0."""
  c, s = np.cos(angle), np.sin(angle)
  return points @ np.array([[c, s], [-s, c]])


def condition_rng(seed: int, char: str, r: int) -> np.random.Generator:
  """Generator of condition (char, r): independent of the other letters in the set."""
  return np.random.default_rng([seed, ord(char), r])


def _check_letters(letters: str | Sequence[str], name: str = "letters") -> tuple[str, ...]:
  if not isinstance(letters, (str, list, tuple)):
    raise ValueError(f"{name}: expected a string or sequence of letters, got {letters!r}.")
  letters = tuple(letters)
  if not letters:
    raise ValueError(f"{name}: need at least one letter.")
  bad = [c for c in letters if not isinstance(c, str) or len(c) != 1 or c.isspace()]
  if bad:
    raise ValueError(f"{name}: each entry must be one non-space character; got {bad}.")
  dup = sorted({c for c in letters if letters.count(c) > 1})
  if dup:
    raise ValueError(f"{name}: duplicate letter(s) {dup} in {''.join(letters)!r}.")
  return letters


@DATASETS.register("letters")
def letters(*, letters: str | Sequence[str] = "SHLTAE", num_rotations: int = 20,
            val_letter: str | Sequence[str] = "S", copies: int = 4, points_per_copy: int = 250,
            resolution: int = 64, extent: float | None = EXTENT, seed: int = 0) -> Populations:
  """The rotated-letter populations of MixFlow §5.1.

  Args:
    letters: the alphabet, a string or a sequence of single characters
      (the paper uses 6 letters including S and H).
    num_rotations: R, even; angles 2 pi r / R, r = 0..R-1.
    val_letter: the letter whose odd rotations are held out, or several
      letters (a string or sequence of distinct letters of `letters`).
    copies: independent draws per condition (the paper's colour copies).
    points_per_copy: points per copy.
    resolution: side of the rendered mask in pixels.
    extent: half the longer side of each letter's bounding box in sample
      units (Meta Flow Matching's 3 by default), or None for the earlier
      font units (letters ~1.45 units tall).
    seed: sampling seed; the dataset is a deterministic function of it.

  Returns:
    `Populations` with len(letters) * R / 2 + R / 2 conditions named like
    "S_r03", samples `[copies * points_per_copy, 2]`, descriptors
    `[K, len(letters) + 1]` (one-hot letter, r / R), covariates "letter",
    "rotation" (the index r) and "angle" (360 r / R degrees), and titles
    such as "S, 54°" (from the letter and angle covariates).
  """
  alphabet = _check_letters(letters)
  held = _check_letters(val_letter, "val_letter")
  if not set(held) <= set(alphabet):
    raise ValueError(
        f"val_letter={val_letter!r} is not one of the letters {list(alphabet)}.")
  for name, value, low in (("num_rotations", num_rotations, 2), ("copies", copies, 1),
                           ("points_per_copy", points_per_copy, 1),
                           ("resolution", resolution, MIN_RESOLUTION)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
  if extent is not None and (isinstance(extent, bool) or not isinstance(extent, numbers.Real)
                             or not np.isfinite(extent) or extent <= 0):
    raise ValueError(f"extent must be a positive number or None, got {extent!r}.")
  if num_rotations % 2:
    raise ValueError(
        f"num_rotations must be even (even rotations train, odd ones are held out), "
        f"got {num_rotations}.")
  extent = None if extent is None else float(extent)
  glyphs = [render_glyph(c, int(resolution), extent) for c in alphabet]
  n = int(copies) * int(points_per_copy)
  names, samples, descriptors, splits, cov_letter, cov_rot, cov_angle = ([] for _ in range(7))
  for li, glyph in enumerate(glyphs):
    for r in range(num_rotations):
      if r % 2 and glyph.char not in held:
        continue  # Odd rotations of training letters are not in the set-up.
      points = sample_glyph(glyph, n, condition_rng(seed, glyph.char, r))
      samples.append(rotate(points, 2 * np.pi * r / num_rotations))
      one_hot = np.zeros(len(alphabet) + 1, np.float32)
      one_hot[li] = 1.0
      one_hot[-1] = r / num_rotations
      descriptors.append(one_hot)
      names.append(f"{glyph.char}_r{r:02d}")
      splits.append("heldout" if r % 2 else "train")
      cov_letter.append(glyph.char)
      cov_rot.append(r)
      cov_angle.append(360.0 * r / num_rotations)
  info = (f"letters {''.join(alphabet)!r} x {num_rotations} rotations (train: even rotations; "
          f"heldout: odd rotations of {''.join(held)!r}), {n} points per condition "
          f"({copies} copies x {points_per_copy}), {resolution}px {font_name(int(resolution))}, "
          + ("font units" if extent is None else f"extent {extent:g}"))
  return Populations(names=names, samples=samples, descriptors=np.stack(descriptors),
                     splits=splits, info=info,
                     covariates={"letter": cov_letter, "rotation": cov_rot, "angle": cov_angle},
                     titles=[f"{c}, {a:g}°" for c, a in zip(cov_letter, cov_angle)])


# The training populations are the same for every `val_letter` (tested), so a
# finished run may be re-evaluated with another one (`config.evaluation_only_keys`).
letters.evaluation_only = ("val_letter",)

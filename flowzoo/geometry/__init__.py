"""State spaces: each module has `interpolate`, `target_velocity` and `sq_norm`."""

from flowzoo.geometry import euclidean  # noqa: F401
from flowzoo.geometry import bures  # noqa: F401  (registers the "euler_bw" solver)
from flowzoo.geometry import pointclouds  # noqa: F401

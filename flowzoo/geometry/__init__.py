from flowzoo.geometry import bures  # noqa: F401  (registers the "bw_euler" solver)

from flowzoo.geometry import bures  # noqa: F401  (registers the "euler_bw" solver)

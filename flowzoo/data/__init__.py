from flowzoo.data import bbbc021  # noqa: F401  (registers bbbc021_wells, bbbc021_cells)
from flowzoo.data import bbbc021_sim  # noqa: F401  (registers bbbc021_sim)
from flowzoo.data import descriptors  # noqa: F401
from flowzoo.data import letters  # noqa: F401  (registers letters)
from flowzoo.data import pointclouds  # noqa: F401  (registers digits_clouds, mnist_clouds, mesh_clouds)
from flowzoo.data import gaussians  # noqa: F401  (registers gaussian_spiral, gaussian_moons, gaussian_sphere)
from flowzoo.data import gaussians_cells  # noqa: F401  (registers pbmc_metacells, seqfish_niches)
from flowzoo.data import anndata_perturbations  # noqa: F401  (registers anndata_perturbations)
from flowzoo.data import crops  # noqa: F401  (registers crops: streamed image crops)

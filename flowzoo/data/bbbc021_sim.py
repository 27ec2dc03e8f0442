"""SIMULATED stand-in for BBBC021 (default data of `mixflow_bbbc021.py`).

No BBBC021 data can be downloaded by the product, so its default run uses
populations generated here. What is real: the 34 compound names and their
12 mechanism-of-action (MoA) classes plus the DMSO control (CellFlux,
App. E, Table 3) and the named held-out splits. Everything else is made up:

  1. Descriptors y_c = P_moa(c) + tau * eps_c: a random MoA prototype plus a
     compound-specific perturbation, so compounds of one MoA are close
     (a stand-in for fingerprint similarity); DMSO has y = 0.
  2. A fixed random smooth map h(y) = tanh(W y / sqrt(C) + b) drives a
     J-component Gaussian mixture per compound:
        mean_j(y)   = m_j + effect * A_j (h(y) - h(0)),
        logit_j(y)  = l_j + weight_effect * B_j (h(y) - h(0)),
     with per-component diagonal scales. DMSO is the mixture at y = 0.
     Because the map is smooth in y, a held-out compound's population is
     predictable from its descriptor and its MoA neighbours in training,
     the out-of-distribution setting of MixFlow §5.3.
  3. Plates: each compound is imaged on a few of `num_plates` plates; a cell
     on plate p is shifted by delta_p ~ N(0, batch_effect^2 I) (the batch
     effect of CellFlux App. E, Fig. 5). Every plate has DMSO control
     cells; a compound's `sources` are the controls of its own plates.

Doses are not simulated (one population per compound).
"""

from __future__ import annotations

import numpy as np

from flowzoo.data.pca import reduce_populations
from flowzoo.data.splits import assign_splits
from flowzoo.data.populations import Populations
from flowzoo.registry import DATASETS

# CellFlux App. E, Table 3 (spelling of IMPA's emb_fp.csv and the Broad CSV).
COMPOUND_MOA = {
    "cytochalasin B": "Actin disruptors", "cytochalasin D": "Actin disruptors",
    "latrunculin B": "Actin disruptors",
    "AZ258": "Aurora kinase inhibitors", "AZ841": "Aurora kinase inhibitors",
    "mevinolin/lovastatin": "Cholesterol-lowering", "simvastatin": "Cholesterol-lowering",
    "chlorambucil": "DNA damage", "cisplatin": "DNA damage", "etoposide": "DNA damage",
    "mitomycin C": "DNA damage",
    "camptothecin": "DNA replication", "floxuridine": "DNA replication",
    "methotrexate": "DNA replication", "mitoxantrone": "DNA replication",
    "AZ138": "Eg5 inhibitors",
    "PP-2": "Epithelial",
    "alsterpaullone": "Kinase inhibitors", "bryostatin": "Kinase inhibitors",
    "PD-169316": "Kinase inhibitors",
    "colchicine": "Microtubule destabilizers", "demecolcine": "Microtubule destabilizers",
    "nocodazole": "Microtubule destabilizers", "vincristine": "Microtubule destabilizers",
    "docetaxel": "Microtubule stabilizers", "epothilone B": "Microtubule stabilizers",
    "taxol": "Microtubule stabilizers",
    "ALLN": "Protein degradation", "lactacystin": "Protein degradation",
    "MG-132": "Protein degradation", "proteasome inhibitor I": "Protein degradation",
    "anisomycin": "Protein synthesis", "cyclohexamide": "Protein synthesis",
    "emetine": "Protein synthesis",
    "DMSO": "DMSO",
}
CONTROL = "DMSO"
_HIDDEN = 64  # width of the random smooth map h(y).

REAL_DATA_HINT = (
    "To train on real BBBC021 profiles use a config whose dataset section is "
    "'bbbc021_wells' (e.g. --config=mixflow_bbbc021.py, with "
    "--config.dataset.path=<.../BBBC021_feature_selected_mad_robustize.csv> and "
    "--config.dataset.descriptors=<.../emb_fp.csv>) or 'bbbc021_cells' for per-cell embeddings.")


def _world(rng: np.random.Generator, *, moas, descriptor_dim, dim, components,
           compound_noise, effect, weight_effect):
  """Draws the fixed simulator: MoA prototypes and the descriptor -> mixture map."""
  c, h, j = descriptor_dim, _HIDDEN, components
  return dict(
      prototypes={m: rng.normal(size=c) for m in moas},
      compound_noise=compound_noise,
      w=rng.normal(size=(h, c)), b=rng.normal(scale=0.5, size=h),
      centers=rng.normal(size=(j, dim)),
      a=effect * rng.normal(size=(j, dim, h)) / np.sqrt(h),
      logits=rng.normal(scale=0.3, size=j),
      bw=weight_effect * rng.normal(size=(j, h)) / np.sqrt(h),
      scales=rng.uniform(0.25, 0.5, size=(j, 1)) * np.exp(0.3 * rng.normal(size=(j, dim))),
  )


def mixture_params(world: dict, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Ground-truth mixture of descriptor `y` `[C]`: weights `[J]`, means, scales `[J, D]`."""
  c = y.shape[-1]
  dh = (np.tanh(world["w"] @ y / np.sqrt(c) + world["b"]) - np.tanh(world["b"]))
  means = world["centers"] + world["a"] @ dh
  logits = world["logits"] + world["bw"] @ dh
  w = np.exp(logits - logits.max())
  return w / w.sum(), means, world["scales"]


def _cells(rng, world, y, n, shift):
  weights, means, scales = mixture_params(world, y)
  comp = rng.choice(len(weights), size=n, p=weights)
  return means[comp] + scales[comp] * rng.normal(size=(n, means.shape[1])) + shift


@DATASETS.register("bbbc021_sim")
def bbbc021_sim(seed: int = 0, dim: int = 16, descriptor_dim: int = 32, components: int = 3,
                cells_per_population: int = 256, control_cells_per_plate: int = 64,
                num_plates: int = 10, plates_per_compound: int = 3,
                compound_noise: float = 0.35, effect: float = 1.5, weight_effect: float = 1.0,
                batch_effect: float = 0.3, split="cellflux", heldout_fraction: float = 0.3,
                num_validation: int = 0, split_seed: int = 0, include_control: bool = True,
                pca_components: int | None = None) -> Populations:
  """Simulated BBBC021-like populations (35 conditions; see module docstring).

  Args:
    seed: fixes the simulator (descriptors, map, plate effects) and the cells.
    dim: features per cell (the "embedding" size; e.g. 512 for a PCA sweep).
    descriptor_dim: size C of the compound descriptors.
    components: J modes of each compound's response mixture (2-4 sensible).
    cells_per_population: cells per compound (and for the DMSO population).
    control_cells_per_plate: DMSO cells per plate, pooled into `sources`.
    plates_per_compound: plates (of `num_plates`) each compound is imaged on.
    compound_noise: tau, spread of compounds around their MoA prototype.
    effect, weight_effect: size of the descriptor's effect on means / weights.
    batch_effect: standard deviation of the per-plate shift.
    split, heldout_fraction, num_validation, split_seed: see `assign_splits`;
      default CellFlux's 8 held-out compounds.
    include_control: DMSO as a train population with a zero descriptor.
    pca_components: PCA fitted on train conditions (`reduce_populations`).
  """
  for name, v in dict(dim=dim, descriptor_dim=descriptor_dim, components=components,
                      cells_per_population=cells_per_population,
                      control_cells_per_plate=control_cells_per_plate,
                      num_plates=num_plates, plates_per_compound=plates_per_compound).items():
    if int(v) < 1:
      raise ValueError(f"bbbc021_sim: {name} must be >= 1, got {v}.")
  if plates_per_compound > num_plates:
    raise ValueError(f"plates_per_compound={plates_per_compound} > num_plates={num_plates}.")
  moas = sorted(set(COMPOUND_MOA.values()) - {"DMSO"})
  world = _world(np.random.default_rng([seed, 0]), moas=moas, descriptor_dim=descriptor_dim,
                 dim=dim, components=components, compound_noise=compound_noise,
                 effect=effect, weight_effect=weight_effect)
  rng = np.random.default_rng([seed, 1])
  shifts = batch_effect * rng.normal(size=(num_plates, dim))
  controls = [_cells(rng, world, np.zeros(descriptor_dim), control_cells_per_plate, shifts[p])
              for p in range(num_plates)]
  compounds = sorted(COMPOUND_MOA, key=str.lower)
  labels = assign_splits(compounds, split, heldout_fraction=heldout_fraction,
                         num_validation=num_validation, seed=split_seed, controls=(CONTROL,))
  names, samples, ys, sources, plates_cov = [], [], [], [], []
  for c in compounds:
    if c == CONTROL:
      if not include_control:
        continue
      y = np.zeros(descriptor_dim)
      plates = np.arange(num_plates)
    else:
      y = world["prototypes"][COMPOUND_MOA[c]] + compound_noise * rng.normal(size=descriptor_dim)
      plates = np.sort(rng.choice(num_plates, plates_per_compound, replace=False))
    # Cells spread round-robin over the compound's plates, each with its shift.
    on = plates[np.arange(cells_per_population) % len(plates)]
    x = np.concatenate([_cells(rng, world, y, int((on == p).sum()), shifts[p]) for p in plates])
    names.append(c)
    samples.append(x)
    ys.append(y)
    sources.append(np.concatenate([controls[p] for p in plates]))
    plates_cov.append(",".join(f"plate{p}" for p in plates))
  pops = Populations(
      names=names, samples=samples, descriptors=np.stack(ys), splits=[labels[c] for c in names],
      covariates=dict(compound=list(names), moa=[COMPOUND_MOA[c] for c in names],
                      plates=plates_cov),
      titles=[f"{c} ({COMPOUND_MOA[c]})" for c in names], sources=sources,
      info=(f"SIMULATED BBBC021 stand-in (not real measurements): real compound names and MoA "
            f"classes (CellFlux Table 3), synthetic {descriptor_dim}-d descriptors and "
            f"{dim}-d cells from a smooth descriptor->{components}-mode mixture map with "
            f"{num_plates} plate batch effects; split {split!r}. {REAL_DATA_HINT}"))
  return reduce_populations(pops, pca_components) if pca_components else pops

"""CellFlux in image space: single-cell BBBC021 crops, control -> treated (CellFlux §3-4, App. C).

Data: a crops folder in the IMPA/CellFlux layout (`dataset.name=crops`: one
`.npy` per cell and `crops_index.csv`, converted once into a TFDS dataset
and streamed by grain; BUILD.md "Your own crops"). The default path is the
shared set `../shared/data/bbbc021_crops` (843 real 68x68x3 crops of one
plate: DMSO and cyclohexamide 15 / 50 uM; no licence, read in place), so
the two treated conditions are seen compounds and "heldout" means held-out
*cells* of each (20 %, seeded), generated from held-out controls of their
plate.

Method: CellFlux's (`cellflux_bbbc021.METHOD`): the empirical base (x0 = a
control crop of the target's own plate), independent pairing, noise
augmentation with p_e = 0.5 (Eq. 5), condition drop p_c = 0.2 and
classifier-free guidance 1.2 (App. C); N(0, I) noise on x0 at generation as
CellFlux's code. The velocity field is the 2-D U-Net (ADM-like residual
blocks, FiLM time + condition embedding, self-attention at the lowest
resolution). App. C: Adam, lr 1e-4, batch 128, four stages of width 128 at
96 x 96. The native variant keeps 68 x 68, where three stages fit (68 -> 34
-> 17; four need a multiple of 8); `:paper` resizes to 64 x 64 and uses four
stages of width 128 with the code's optimizer and sampler.

Arms trained and evaluated beside it (one table with the trivial baselines
control / pooled / train_cells, `flowzoo.image_eval`): `no_noise` (Table 2d:
without noise augmentation, and without the inference noise that only a model
trained with it can undo) and `guidance_1` (Table 2d: guidance 1.0, i.e. none;
evaluation only, it reuses this run's checkpoint). Other Table 2 switches
are one line each:

    --config.dataset.pairing=other_plates   # sources from other plates (needs 2+ plates:
                                            # the shared set has one, and says so)
    --config.coupling.name=sinkhorn         # OT instead of independent pairing
    --config.method.source_noise_prob=0.0   # no noise augmentation
    --config.eval.guidance=1.0              # no guidance

Commands:

    python -m experiments.run --config=cellflux_bbbc021_images.py:runlocal \\
        --config.dataset.path=../shared/data/bbbc021_crops --workdir=/tmp/cellflux_img
    python -m experiments.run --config=cellflux_bbbc021_images.py --workdir=DIR   # native 68 px
    python -m experiments.run --config=cellflux_bbbc021_images.py:paper --workdir=DIR

Expected (runlocal, seed 0, held-out cells, morphology features; the whole
page in results/cellflux_bbbc021_images.md; each run ~2 min of training at
3.5 steps/s plus ~2 min of evaluation on 2 idle cores):

    arm                      FID_o   FID_c   KID_o   accuracy
    cellflux (guidance 1.2)  279     288     151     0.57
    guidance_1               281     290     153     0.52
    no_noise                  29.6    37.3    0.92   0.54
    control (baseline)       134     138      26.9   0.03
    pooled (baseline)          9.3    19.6     0.01  0.44
    train_cells (floor)       10.0    15.4     0.02  0.86

At 400 CPU steps CellFlux with its inference noise loses to every trivial
baseline: the N(0, I) added to the control at generation is not yet undone
by the flow (blurred, noisy crops in heldout_real_vs_generated.png). Without
noise in training and generation the flow beats the control baseline but
not the pooled training cells. CellFlux's own numbers (Inception FID
on 98k IMPA crops, Table 1: BBBC021 FID_o 18.7, FID_c 56.8, KID_o 1.62,
MoA accuracy 71.1 %) are not comparable with these features and cells.
"""

from pathlib import Path

from experiments.configs import cellflux_bbbc021, common

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
VARIANTS = ("", "runlocal", "paper", "paper_runlocal")


def get_config(arg: str | None = None):
  arg = arg or ""
  if arg not in VARIANTS:
    raise ValueError(f"cellflux_bbbc021_images: unknown variant {arg!r}; valid: {VARIANTS[1:]}.")
  paper, runlocal = arg.startswith("paper"), arg.endswith("runlocal")
  c = common.base_config()
  c.dataset = dict(name="crops", path=str(SHARED_DATA / "bbbc021_crops"), data_dir="",
                   image_size=0, control="DMSO", pairing="same_plate", augment=True, workers=1)
  c.method = dict(cellflux_bbbc021.METHOD)
  c.base = dict(cellflux_bbbc021.BASE)
  c.coupling = dict(cellflux_bbbc021.COUPLING)
  # Rows mix conditions (CellFlux's batches are shuffled crops).
  c.data = dict(batch_size=128, populations_per_batch=128)
  c.model = dict(name="unet", base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                 attention_levels=(2,), num_heads=4, dropout=0.0, emb_dim=256)
  c.optim.update(name="adam", lr=1e-4, schedule="constant", grad_clip=1.0)
  # One step per dispatch, unrolled: XLA:CPU runs convolutions ~10x slower inside
  # a loop (flowzoo.train.Trainer `unroll`); a dispatch costs < 1 % of a U-Net step.
  c.train.update(steps=20_000, steps_per_dispatch=1, unroll=True, log_every=500,
                 ckpt_every=2_000, ema_decay=0.999)
  c.eval.update(splits=("train", "heldout"), solver="euler", num_steps=50,
                guidance=cellflux_bbbc021.GUIDANCE, metrics=("fid_o", "fid_c", "kid_o", "kid_c",
                                                             "accuracy"),
                max_samples=500, chunk=256)
  # no_noise: neither Eq. 5's augmentation nor the inference noise (a model never
  # trained on noisy sources diverges from them: FID_o 6.7e4 at runlocal).
  c.baselines = dict(no_noise="method.source_noise_prob=0.0;method.inference_noise=0.0",
                     guidance_1="eval.guidance=1.0")
  if paper:
    # CellFlux's code where it differs from the paper (cellflux_bbbc021.py `:paper`).
    c.dataset.image_size = 64
    c.model.update(base_channels=128, channel_mult=(1, 1, 1, 1), attention_levels=(3,))
    c.method.update(cellflux_bbbc021.PAPER_METHOD)
    c.eval.update(cellflux_bbbc021.PAPER_EVAL)
    c.optim.update(name="adamw", lr=1e-4, b1=0.9, b2=0.95, weight_decay=0.01, grad_clip=0.0)
  if runlocal:
    # A CPU-sized look (about 3 minutes on 2 cores): 32 x 32 crops, a two-level
    # U-Net of width 16 without attention (0.31 s a step at batch 16; 0.67 s with
    # attention at 16 x 16), a larger learning rate and a
    # short EMA so 400 steps show learning.
    c.dataset.update(image_size=32, workers=0)
    c.data = dict(batch_size=16, populations_per_batch=16)
    c.model.update(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(),
                   emb_dim=64)
    c.optim.update(lr=2e-3, schedule="cosine")
    c.train.update(steps=400, log_every=50, ckpt_every=200, ema_decay=0.98)
    c.eval.update(num_steps=10, max_samples=64, chunk=64)  # 64: little padding of 80 crops
  return common.finalize(c)

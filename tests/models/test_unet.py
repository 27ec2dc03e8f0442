"""U-Net velocity network: shapes, zero init, conditioning, dropout, errors, CFM training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowzoo import models  # noqa: F401  (registers)
from flowzoo.bases.gaussian import Gaussian
from flowzoo.build import build
from flowzoo.couplings.independent import Independent
from flowzoo.data.populations import Populations, pack
from flowzoo.methods.cfm import CFM
from flowzoo.models.unet import UNet
from flowzoo.registry import MODELS
from flowzoo.train import Trainer, make_optimizer

TINY = dict(base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, emb_dim=16,
            norm_groups=4, time_frequencies=4)
IMAGE, VECTOR = (2, 8, 8, 3), (2, 10)  # D = 10 is padded to 12 and cropped back


def inputs(shape, seed=0, cond_dim=3):
  k = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.uniform(k[0], (shape[0],)), jax.random.normal(k[1], shape),
          jax.random.normal(k[2], (shape[0], cond_dim)))


def init(model, t, x, c):
  return jax.jit(model.init)(jax.random.key(0), t, x, c)


def perturb_output(params, seed=1):
  """Makes the zero-initialised output conv nonzero so the body is visible."""
  params = jax.tree.map(lambda a: a, params)  # copies the nested dicts
  out = params["params"]["out"]
  out["kernel"] = 0.1 * jax.random.normal(jax.random.key(seed), out["kernel"].shape)
  return params


# One init per state kind, shared by the tests below: on 2 CPU cores the XLA
# compile of `init` dominates the run time of this file.
@pytest.fixture(scope="module", params=[IMAGE, VECTOR], ids=["image", "vector"])
def setup(request):
  model = UNet(**TINY)
  t, x, c = inputs(request.param)
  return model, (t, x, c), init(model, t, x, c)


@pytest.fixture(scope="module")
def vector_setup():
  model = UNet(**TINY)
  t, x, c = inputs(VECTOR)
  return model, (t, x, c), init(model, t, x, c)


def test_output_shape_and_zero_at_init(setup):
  model, (t, x, c), params = setup
  v = model.apply(params, t, x, c)
  assert v.shape == x.shape
  np.testing.assert_array_equal(v, 0.0)  # zero-initialised output conv
  # Unconditional call (cond=None) skips the condition embedding.
  np.testing.assert_array_equal(model.apply(params, t, x, None), 0.0)


def assert_depends_on_t_x_cond(model, params, t, x, c):
  v = model.apply(params, t, x, c)
  assert v.shape == x.shape and float(jnp.abs(v).max()) > 0
  for what, args in (("t", (1.0 - t, x, c)), ("x", (t, x + 1.0, c)), ("cond", (t, x, c + 1.0)),
                     ("cond vs None", (t, x, None))):
    diff = float(jnp.abs(model.apply(params, *args) - v).max())
    assert diff > 1e-4, f"output does not depend on {what}"
  # Rows are independent: changing sample 1 leaves sample 0's velocity alone.
  v2 = model.apply(params, t, x.at[1].add(1.0), c)
  np.testing.assert_allclose(v2[0], v[0], rtol=1e-5, atol=1e-6)


def test_output_depends_on_t_x_and_cond(setup):
  model, (t, x, c), params = setup
  assert_depends_on_t_x_cond(model, perturb_output(params), t, x, c)


def test_additive_injection_also_conditions():
  model = UNet(**TINY, scale_shift=False)
  t, x, c = inputs(VECTOR)
  params = init(model, t, x, c)
  # Additive injection: one embedding channel per feature, no scale half.
  assert params["params"]["down_0_0"]["emb"]["kernel"].shape == (16, TINY["base_channels"])
  assert_depends_on_t_x_cond(model, perturb_output(params), t, x, c)


def test_vector_padding_is_cropped_and_every_gene_matters(vector_setup):
  """D = 10 runs at 12 positions internally; each of the 10 outputs responds."""
  model, (t, x, c), params = vector_setup
  params = perturb_output(params)
  assert params["params"]["gene_embedding"].shape == (10, TINY["base_channels"])
  jac = jax.jacfwd(lambda x0: model.apply(params, t[:1], x0[None], c[:1])[0])(x[0])
  assert jac.shape == (10, 10)
  assert np.all(np.abs(np.asarray(jac)).sum(0) > 0), "some gene does not influence the output"


def test_dropout_only_in_training_with_rng(vector_setup):
  _, (t, x, c), params = vector_setup
  model = UNet(**TINY, dropout=0.5)  # dropout has no parameters: same params
  params = perturb_output(params)
  det = model.apply(params, t, x, c)
  # train=False: deterministic and ignores a dropout rng.
  np.testing.assert_array_equal(
      model.apply(params, t, x, c, train=False, rngs={"dropout": jax.random.key(5)}), det)
  a = model.apply(params, t, x, c, train=True, rngs={"dropout": jax.random.key(1)})
  a_again = model.apply(params, t, x, c, train=True, rngs={"dropout": jax.random.key(1)})
  b = model.apply(params, t, x, c, train=True, rngs={"dropout": jax.random.key(2)})
  np.testing.assert_array_equal(a, a_again)
  assert float(jnp.abs(a - b).max()) > 1e-4
  assert float(jnp.abs(a - det).max()) > 1e-4
  with pytest.raises(Exception, match="dropout"):
    model.apply(params, t, x, c, train=True)  # train needs a dropout rng


def test_bad_image_size_raises_clearly_at_trace_time():
  model = UNet(**TINY)  # 3 levels: H, W must be multiples of 4
  t, x, c = inputs((2, 6, 8, 3))
  with pytest.raises(ValueError, match=r"divisible by 2\^\(levels-1\) = 4"):
    jax.eval_shape(model.init, jax.random.key(0), t, x, c)
  # Fewer levels accept it.
  small = UNet(**dict(TINY, channel_mult=(1, 2)))
  assert jax.eval_shape(small.init, jax.random.key(0), t, x, c) is not None


@pytest.mark.parametrize("kwargs, match", [
    (dict(attention_levels=(3,)), "attention level 3 outside"),
    (dict(attention_levels=(2,), num_heads=3), "num_heads=3 does not divide"),
    (dict(channel_mult=()), "channel_mult must be non-empty"),
    (dict(act="swishh"), "Unknown activation"),
])
def test_bad_config_raises(kwargs, match):
  model = UNet(**dict(TINY, **kwargs))
  t, x, c = inputs(VECTOR)
  with pytest.raises((ValueError, KeyError), match=match):
    jax.eval_shape(model.init, jax.random.key(0), t, x, c)


def test_point_cloud_input_raises():
  model = UNet(**TINY)
  t, x, c = inputs((2, 4, 3))
  with pytest.raises(ValueError, match=r"images \[B, H, W, C\] or vectors \[B, D\]"):
    jax.eval_shape(model.init, jax.random.key(0), t, x, c)


def test_self_attention_option():
  model = UNet(**dict(TINY, channel_mult=(1, 2)), attention_levels=(1,), num_heads=2)
  t, x, c = inputs(IMAGE)
  params = init(model, t, x, c)
  names = set(params["params"])
  assert {"down_attn_1_0", "mid_attn", "up_attn_1_0", "up_attn_1_1"} <= names
  assert not any(n.startswith(("down_attn_0", "up_attn_0")) for n in names)
  np.testing.assert_array_equal(model.apply(params, t, x, c), 0.0)
  params = perturb_output(params)
  v = model.apply(params, t, x, c)
  assert v.shape == IMAGE and float(jnp.abs(v).max()) > 0


def test_swapping_the_model_name_in_an_mlp_config_builds_a_unet():
  """`--config.model.name=unet` on a config that still holds the MLP's knobs."""
  section = dict(name="unet", hidden=(16, 16), act="gelu", dropout=0.0, time_frequencies=4,
                 cond_embed=8, conditioning="concat")
  model = build(MODELS, section, "model", event_shape=(10,), cond_dim=3)
  assert isinstance(model, UNet) and model.act == "gelu" and model.time_frequencies == 4
  for key, value in MODELS.defaults("unet").items():  # every default is a plain config value
    assert isinstance(value, (bool, int, float, str, tuple)), (key, value)


def test_cfm_with_unet_trains_on_constant_target():
  """Every target is the same vector: v* = x1 - x0 is learnable, loss must fall."""
  dim, target = 6, np.array([2.0, -1.0, 0.5, 1.5, -2.0, 1.0], np.float32)
  pops = Populations(names=["a", "b"], samples=[np.tile(target, (8, 1))] * 2,
                     descriptors=np.eye(2), splits=["train", "train"])
  data, ids = pack(pops), jnp.arange(2)
  model = UNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, emb_dim=16,
               norm_groups=4, time_frequencies=4)
  method = CFM(model=model, base=Gaussian(event_shape=(dim,)), coupling=Independent())
  method.check_data((dim,), 2)
  trainer = Trainer(method, {"velocity": make_optimizer(name="adam", lr=1e-2)},
                    batch_size=16, populations_per_batch=2, ema_decay=0.9)
  state = trainer.init(jax.random.key(0), data, ids)
  state, m = trainer.run(state, data, ids, jax.random.key(1), 30)
  loss = m["loss"]
  assert loss.shape == (30,) and np.all(np.isfinite(loss))
  # At init v = 0, so the loss is E||x1 - x0||^2 = |target|^2 + dim ~ 19.
  assert 10 < loss[:3].mean() < 30
  # v* = (target - x_t) / (1 - t) is sharp near t = 1; 30 steps reach ~dim.
  assert loss[-5:].mean() < 0.6 * loss[:5].mean(), loss

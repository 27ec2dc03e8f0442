"""U-Net velocity network: shapes, zero init, conditioning, dropout, errors, CFM training."""

import functools

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


def key(seed):
  """An "rbg" PRNG key: XLA on CPU compiles its bit generator several times
  faster than threefry's, and compiles (one per parameter shape in `init`)
  dominate this file's run time on 2 cores. The model takes any key type."""
  return jax.random.key(seed, impl="rbg")


def inputs(shape, seed=0, cond_dim=3):
  """(t [B], x_t [B, *event], cond [B, C]) drawn with numpy (no XLA compile)."""
  gen = np.random.default_rng(seed)
  return (jnp.asarray(gen.uniform(size=shape[:1]), jnp.float32),
          jnp.asarray(gen.standard_normal(shape), jnp.float32),
          jnp.asarray(gen.standard_normal((shape[0], cond_dim)), jnp.float32))


@functools.lru_cache(maxsize=None)
def jitted_apply(model):
  """One compiled apply per model config (compiles dominate on 2 CPU cores)."""
  return jax.jit(model.apply, static_argnames="train")


@functools.lru_cache(maxsize=None)
def real_init(model, shape):
  t, x, c = inputs(shape)
  return jax.jit(model.init)(key(0), t, x, c)


def random_params(model, t, x, c, seed=1):
  """Random parameters of the right structure, without compiling `init`.

  Every leaf, the zero-initialised output conv included, is nonzero, so the
  whole network is visible in the output.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), t, x, c)
  gen = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.3 * gen.standard_normal(s.shape), s.dtype), shapes)


@pytest.mark.parametrize("shape", [IMAGE, VECTOR], ids=["image", "vector"])
def test_output_shape_and_zero_at_init(shape):
  model = UNet(**TINY)
  t, x, c = inputs(shape)
  params = real_init(model, shape)
  v = jitted_apply(model)(params, t, x, c)
  assert v.shape == x.shape
  np.testing.assert_array_equal(v, 0.0)  # zero-initialised output conv
  # The rest of the network is not trivially zero: only the output conv is.
  assert float(jnp.abs(params["params"]["down_0_0"]["conv_out"]["kernel"]).max()) > 0


def assert_depends_on_t_x_cond(model, params, t, x, c):
  apply = jitted_apply(model)
  v = apply(params, t, x, c)
  assert v.shape == x.shape and float(jnp.abs(v).max()) > 0
  for what, args in (("t", (1.0 - t, x, c)), ("x", (t, x + 1.0, c)), ("cond", (t, x, c + 1.0))):
    diff = float(jnp.abs(apply(params, *args) - v).max())
    assert diff > 1e-4, f"output does not depend on {what}"
  # Rows are independent: changing sample 1 leaves sample 0's velocity alone.
  v2 = apply(params, t, x.at[1].add(1.0), c)
  np.testing.assert_allclose(v2[0], v[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [IMAGE, VECTOR], ids=["image", "vector"])
def test_output_depends_on_t_x_and_cond(shape):
  """Real init with the zero output conv made nonzero."""
  model = UNet(**TINY)
  params = jax.tree.map(lambda a: a, real_init(model, shape))  # copies the dicts
  out = params["params"]["out"]
  out["kernel"] = jnp.asarray(0.1 * np.random.default_rng(1).standard_normal(
      out["kernel"].shape), jnp.float32)
  assert_depends_on_t_x_cond(model, params, *inputs(shape))


def test_additive_injection_also_conditions():
  model = UNet(**TINY, scale_shift=False)
  t, x, c = inputs(VECTOR)
  shapes = jax.eval_shape(model.init, jax.random.key(0), t, x, c)
  # Additive injection: one embedding channel per feature, no scale half.
  assert shapes["params"]["down_0_0"]["emb"]["kernel"].shape == (16, TINY["base_channels"])
  assert_depends_on_t_x_cond(model, random_params(model, t, x, c), t, x, c)


def test_unconditional_call_skips_the_condition_network():
  model = UNet(**TINY)
  t, x, c = inputs(VECTOR)
  names = set(jax.eval_shape(model.init, jax.random.key(0), t, x, None)["params"])
  assert "cond_1" not in names and "cond_1" in set(random_params(model, t, x, c)["params"])
  # Params with a condition network also serve cond=None (classifier-free guidance).
  v = jax.eval_shape(model.apply, random_params(model, t, x, c), t, x, None)
  assert v.shape == VECTOR


def test_vector_padding_is_cropped_and_every_gene_matters():
  """D = 10 runs at 12 positions internally; the crop keeps genes 0..9 in order."""
  model = UNet(**TINY)
  t, x, c = inputs(VECTOR)
  params = random_params(model, t, x, c)
  assert params["params"]["gene_embedding"].shape == (10, TINY["base_channels"])
  apply = jitted_apply(model)
  v = apply(params, t, x, c)
  for g in range(10):  # perturb gene g in row 0 only
    dv = apply(params, t, x.at[0, g].add(0.5), c) - v
    assert float(jnp.abs(dv[0, g])) > 1e-5, f"gene {g} output ignores gene {g} input"
    np.testing.assert_allclose(dv[1], 0.0, atol=1e-5)


def test_dropout_only_in_training_with_rng():
  model = UNet(**TINY, dropout=0.5)
  t, x, c = inputs(VECTOR)
  params = random_params(model, t, x, c)
  apply = jitted_apply(model)
  det = apply(params, t, x, c)
  # train=False: deterministic and ignores a dropout rng.
  np.testing.assert_array_equal(
      apply(params, t, x, c, train=False, rngs={"dropout": key(5)}), det)
  a = apply(params, t, x, c, train=True, rngs={"dropout": key(1)})
  a_again = apply(params, t, x, c, train=True, rngs={"dropout": key(1)})
  b = apply(params, t, x, c, train=True, rngs={"dropout": key(2)})
  np.testing.assert_array_equal(a, a_again)
  assert float(jnp.abs(a - b).max()) > 1e-4
  assert float(jnp.abs(a - det).max()) > 1e-4
  with pytest.raises(Exception, match="dropout"):
    jax.eval_shape(functools.partial(model.apply, train=True), params, t, x, c)  # no rng


def test_bad_image_size_raises_clearly_at_trace_time():
  model = UNet(**TINY)  # 3 levels: H, W must be multiples of 4
  t, x, c = inputs((2, 6, 8, 3))
  with pytest.raises(ValueError, match=r"divisible by 2\^\(levels-1\) = 4"):
    jax.eval_shape(model.init, jax.random.key(0), t, x, c)
  # Through the method's pre-compile data check, as `build_method` runs it.
  method = CFM(model=model, base=Gaussian(event_shape=(6, 8, 3)), coupling=Independent())
  with pytest.raises(ValueError, match=r"event shape \(6, 8, 3\).*divisible"):
    method.check_data((6, 8, 3), 3)
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
  t, x, c = inputs(VECTOR)
  with pytest.raises((ValueError, KeyError), match=match):
    jax.eval_shape(UNet(**dict(TINY, **kwargs)).init, jax.random.key(0), t, x, c)


@pytest.mark.parametrize("field, value", [("channel_mult", ("hello",)), ("channel_mult", (1.5,)),
                                          ("attention_levels", "0"), ("attention_levels", (-1,))])
def test_int_tuple_fields_are_checked_at_construction(field, value):
  # Before any call: a typo used to surface as a shape error about the data.
  with pytest.raises(ValueError, match=rf"unet: {field} must be"):
    UNet(**dict(TINY, **{field: value}))


def test_point_cloud_input_raises():
  model = UNet(**TINY)
  t, x, c = inputs((2, 4, 3))
  with pytest.raises(ValueError, match=r"images \[B, H, W, C\] or vectors \[B, D\]"):
    jax.eval_shape(model.init, jax.random.key(0), t, x, c)


def test_self_attention_option():
  model = UNet(**dict(TINY, channel_mult=(1, 2)), attention_levels=(1,), num_heads=2)
  t, x, c = inputs(IMAGE)
  params = random_params(model, t, x, c)
  names = set(params["params"])
  assert {"down_attn_1_0", "mid_attn", "up_attn_1_0", "up_attn_1_1"} <= names
  assert not any(n.startswith(("down_attn_0", "up_attn_0")) for n in names)
  # The attention output projection starts at zero (a residual no-op).
  out_init = jax.eval_shape(model.init, jax.random.key(0), t, x, c)
  assert "out" in out_init["params"]["mid_attn"]["MultiHeadDotProductAttention_0"]
  apply = jitted_apply(model)
  v = apply(params, t, x, c)
  assert v.shape == IMAGE
  no_mid = jax.tree.map(lambda a: a, params)
  no_mid["params"]["mid_attn"] = jax.tree.map(jnp.zeros_like, params["params"]["mid_attn"])
  assert float(jnp.abs(apply(no_mid, t, x, c) - v).max()) > 1e-4, "attention is not wired in"


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
  dim, target = 5, np.array([2.0, -1.0, 0.5, 1.5, -2.0], np.float32)  # D = 5 pads to 6
  pops = Populations(names=["a", "b"], samples=[np.tile(target, (8, 1))] * 2,
                     descriptors=np.eye(2), splits=["train", "train"])
  data, ids = pack(pops), jnp.arange(2)
  model = UNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, emb_dim=16,
               norm_groups=4, time_frequencies=4)
  method = CFM(model=model, base=Gaussian(event_shape=(dim,)), coupling=Independent())
  method.check_data((dim,), 2)
  trainer = Trainer(method, {"velocity": make_optimizer(name="adam", lr=1e-2)},
                    batch_size=16, populations_per_batch=2, ema_decay=0.9)
  state = trainer.init(key(0), data, ids)
  state, m = trainer.run(state, data, ids, key(1), 30)
  loss = m["loss"]
  assert loss.shape == (30,) and np.all(np.isfinite(loss))
  # At init v = 0, so the loss is E||x1 - x0||^2 = |target|^2 + dim = 16.5.
  assert 10 < loss[:3].mean() < 25
  # v* = (target - x_t) / (1 - t) is sharp near t = 1; 30 steps reach ~dim.
  assert loss[-5:].mean() < 0.6 * loss[:5].mean(), loss

"""ODE solvers and guidance of flowzoo.sampling against closed-form solutions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from flowzoo.registry import SOLVERS
from flowzoo.guidance import guided_velocity
from flowzoo.sampling import integrate

# A damped rotation coupled to a decaying mode: non-normal, so the error
# constants do not vanish, and mild enough for coarse grids in float32.
A = np.array([[-0.5, 1.5, 0.0], [-1.5, -0.5, 0.3], [0.0, -0.3, -1.0]], np.float32)
X0 = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -1.0]], np.float32)  # [batch=2, dim=3]


def linear(t, x):
  del t
  return x @ A.T


def linear_exact(t):
  return X0 @ scipy.linalg.expm(t * A).T


def growth(t, x):
  """dx/dt = t x, solved by x0 exp(t^2 / 2): exercises the stage times."""
  return t[:, None] * x


def growth_exact(t):
  return X0 * np.exp(t**2 / 2)


FIXED = {"euler": (1, (8, 16, 32)), "midpoint": (2, (4, 8, 16)),
         "heun": (2, (4, 8, 16)), "rk4": (4, (2, 4, 8))}


def test_registry_lists_all_solvers():
  assert {"euler", "midpoint", "heun", "rk4", "dopri5", "tsit5"} <= set(SOLVERS.names())


@pytest.mark.parametrize("solver", list(FIXED))
@pytest.mark.parametrize("field,exact", [(linear, linear_exact), (growth, growth_exact)],
                         ids=["linear", "time_dependent"])
def test_fixed_step_convergence_order(solver, field, exact):
  order, steps = FIXED[solver]
  errs = [np.abs(np.asarray(integrate(field, jnp.asarray(X0), solver=solver, num_steps=n))
                 - exact(1.0)).max() for n in steps]
  # Slope of log(error) against log(dt): the empirical order of convergence.
  slope = np.polyfit(np.log(1 / np.array(steps)), np.log(errs), 1)[0]
  assert abs(slope - order) < 0.3, (solver, errs, slope)


@pytest.mark.parametrize("solver,expected", [("euler", 0.0), ("midpoint", 0.25),
                                             ("heun", 0.5), ("rk4", 1 / 3)])
def test_one_step_stencils(solver, expected):
  # One step of dx/dt = t^2 over [0, 1] is a quadrature rule for the integral of
  # t^2: left point, midpoint, trapezoid, Simpson. Pins each tableau's times/weights.
  step = SOLVERS.get(solver)
  x1 = step(lambda t, x: jnp.broadcast_to((t**2)[:, None], x.shape), jnp.array(0.0),
            jnp.zeros((2, 1)), jnp.array(1.0))
  np.testing.assert_allclose(x1, expected, atol=1e-6)


@pytest.mark.parametrize("solver", ["midpoint", "heun", "rk4", "dopri5"])
def test_time_dependent_field_exact(solver):
  # dx/dt = t integrates to x0 + 1/2; second-order rules are exact for it.
  v = lambda t, x: jnp.broadcast_to(t[:, None], x.shape)
  x1 = integrate(v, jnp.asarray(X0), solver=solver, num_steps=3)
  np.testing.assert_allclose(x1, X0 + 0.5, atol=1e-6)
  # Euler's left-point sum is off by dt / 2, which the test must be able to see.
  x1 = integrate(v, jnp.asarray(X0), solver="euler", num_steps=4)
  np.testing.assert_allclose(x1, X0 + 0.5 - 1 / 8, atol=1e-6)


@pytest.mark.parametrize("solver", ["dopri5", "tsit5"])
def test_adaptive_matches_closed_form(solver):
  x1 = integrate(linear, jnp.asarray(X0), solver=solver, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(x1, linear_exact(1.0), atol=1e-4)


@pytest.mark.parametrize("solver", ["rk4", "dopri5"])
def test_save_at_trajectory(solver):
  save_at = [0.0, 0.25, 0.25, 0.6, 1.0]  # a repeated time is saved twice
  x1, traj = integrate(linear, jnp.asarray(X0), solver=solver, num_steps=40, save_at=save_at)
  chex.assert_shape(traj, (len(save_at), *X0.shape))
  np.testing.assert_array_equal(traj[0], X0)
  np.testing.assert_array_equal(traj[-1], x1)
  for t, x in zip(save_at, traj):
    np.testing.assert_allclose(x, linear_exact(t), atol=1e-4)
  # Saving does not change the endpoint: interior save times are grid points of
  # a grid with the same step size (40 steps over 0.25 + 0.35 + 0.4).
  np.testing.assert_allclose(x1, integrate(linear, jnp.asarray(X0), solver=solver,
                                           num_steps=40), atol=1e-6)


def test_backward_integration_inverts():
  x1 = linear_exact(1.0).astype(np.float32)
  x0, traj = integrate(linear, jnp.asarray(x1), solver="rk4", num_steps=20, t0=1.0, t1=0.0,
                       save_at=[1.0, 0.5, 0.0])
  np.testing.assert_allclose(x0, X0, atol=1e-4)
  np.testing.assert_allclose(traj[1], linear_exact(0.5), atol=1e-4)
  np.testing.assert_array_equal(traj[0], x1)


@pytest.mark.parametrize("solver", ["rk4", "dopri5"])
def test_pytree_state_gaussian(solver):
  # A Gaussian (mean, cov) pushed by dx/dt = A x: mean' = A mean,
  # cov' = A cov + cov A^T, so cov(1) = e^A cov0 e^A^T.
  def v(t, state):
    del t
    mean, cov = state
    return mean @ A.T, A @ cov + cov @ A.T

  cov0 = np.stack([np.eye(3), np.diag([1.0, 2.0, 0.5])]).astype(np.float32)  # [2, 3, 3]
  mean1, cov1 = integrate(v, (jnp.asarray(X0), jnp.asarray(cov0)), solver=solver,
                          num_steps=16)
  expm = scipy.linalg.expm(A)
  np.testing.assert_allclose(mean1, linear_exact(1.0), atol=1e-4)
  np.testing.assert_allclose(cov1, expm @ cov0 @ expm.T, atol=1e-4)


def test_guidance_combines_constant_fields():
  c, u = jnp.array([[1.0, 2.0]]), jnp.array([[-1.0, 0.5]])
  v_c = lambda t, x: jnp.broadcast_to(c, x.shape)
  v_u = lambda t, x: jnp.broadcast_to(u, x.shape)
  x, t = jnp.zeros((3, 2)), jnp.zeros((3,))
  for s in (0.0, 1.0, 2.5, -0.5):
    np.testing.assert_allclose(guided_velocity(v_c, v_u, s)(t, x),
                               jnp.broadcast_to(u + s * (c - u), x.shape), atol=1e-6)
  assert guided_velocity(v_c, v_u, 1.0) is v_c  # s = 1 is the conditional field itself
  assert guided_velocity(v_c, v_u, 0) is v_u
  # A traced scale works, and integrating the constant guided field moves by it.
  guided = jax.jit(lambda s: integrate(guided_velocity(v_c, v_u, s), x, num_steps=2))
  np.testing.assert_allclose(guided(3.0), jnp.broadcast_to(u + 3.0 * (c - u), x.shape),
                             atol=1e-6)


@pytest.mark.parametrize("solver", ["rk4", "dopri5"])
def test_jit_does_not_retrace(solver):
  chex.clear_trace_counter()  # the counter is keyed by code, shared across parameters
  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(x):
    return integrate(linear, x, solver=solver, num_steps=8, save_at=[0.0, 0.5, 1.0])

  x1, _ = run(jnp.asarray(X0))
  x1b, _ = run(jnp.asarray(2 * X0))  # new values, same shape: reuses the trace
  np.testing.assert_allclose(x1, linear_exact(1.0), atol=1e-3)  # rk4, 8 steps
  np.testing.assert_allclose(x1b, 2 * linear_exact(1.0), atol=2e-3)


def _never_called(t, x):
  raise AssertionError("velocity_fn must not be called for invalid arguments")


@pytest.mark.parametrize("kwargs,match", [
    ({"num_steps": 0}, r"num_steps must be an integer >= 1, got 0"),
    ({"num_steps": 2.5}, r"num_steps must be an integer >= 1, got 2.5"),
    ({"save_at": [0.0, 1.5]}, r"save_at times \[1.5\] lie outside \[0.0, 1.0\]"),
    ({"save_at": [-0.1]}, r"outside"),
    ({"save_at": [0.5, 0.2]}, r"save_at must be sorted from t0=0.0 towards t1=1.0"),
    ({"save_at": []}, r"non-empty"),
    ({"t0": 1.0, "t1": 1.0}, r"distinct"),
    ({"solver": "dopri5", "rtol": 0.0}, r"rtol and atol must be > 0"),
])
def test_bad_arguments_raise_before_tracing(kwargs, match):
  with pytest.raises(ValueError, match=match):
    integrate(_never_called, jnp.asarray(X0), **kwargs)


def test_unknown_solver_lists_valid_names():
  with pytest.raises(KeyError, match=r"Unknown solver 'rk5'.*Valid solver names \(defining module\): "
                     r"dopri5 \(flowzoo.sampling\), euler"):
    integrate(_never_called, jnp.asarray(X0), solver="rk5")

"""The perturbation configs hold PRiMeFlow's / MixFlow's stated choices and parse their variants."""

import pytest

from experiments.configs import cfm_perturbench, mixflow_perturbench, primeflow_perturbench


def test_primeflow_is_the_papers_recipe():
  c = primeflow_perturbench.get_config("paper")
  assert (c.base.name, c.coupling.name, c.method.name) == ("gaussian", "independent", "cfm")
  assert c.method.sigma == 0.0 and c.method.p_uncond == 0.2          # Algorithm 1, Table 11
  assert (c.eval.solver, c.eval.num_steps, c.eval.guidance) == ("euler", 100, 1.0)  # §4
  assert (c.optim.lr, c.optim.weight_decay, c.optim.grad_clip) == (5e-5, 0.0, 5.0)  # App. E
  m = c.model
  assert (m.name, m.base_channels, tuple(m.channel_mult), m.num_res_blocks) == (
      "unet", 256, (1, 1, 2, 2, 4), 2)
  # attention_resolutions [16] = the level downsampled 16x = level 4 of 5.
  assert tuple(m.attention_levels) == (4,) and m.num_heads == 8 and m.dropout == 0.1
  assert m.gene_embedding and m.value_frequencies > 0 and m.conv_resample
  assert c.data.batch_size == 100 and c.dataset.split == "combo"
  cov = primeflow_perturbench.get_config("covariate_paper")
  assert tuple(cov.model.channel_mult) == (1, 2, 2, 4, 4) and cov.data.batch_size == 54  # Table 10
  assert cov.dataset.split == "covariate" and "MAPK1|A172" in cov.dataset.heldout


def test_cpu_sizes_keep_the_recipe():
  """The default and runlocal sizes change network size, steps and lr, never the method."""
  paper = primeflow_perturbench.get_config("paper")
  for variant in ("", "runlocal"):
    c = primeflow_perturbench.get_config(variant)
    for section in ("method", "base", "coupling", "dataset"):
      assert c[section].to_dict() == paper[section].to_dict(), (variant, section)
    assert (c.eval.solver, c.eval.guidance, c.model.gene_embedding) == ("euler", 1.0, True)
  assert primeflow_perturbench.get_config("").train.steps == 2000
  assert tuple(primeflow_perturbench.get_config("").eval.splits) == ("validation", "heldout")


def test_ablation_variants():
  mlp = primeflow_perturbench.get_config("mlp_paper")
  assert mlp.model.name == "mlp" and tuple(mlp.model.hidden) == (2048, 2048)  # Table 13
  assert (mlp.method.p_uncond, mlp.method.sigma, mlp.optim.lr) == (0.1, 0.1, 8.56e-6)
  pca = primeflow_perturbench.get_config("pca_covariate_runlocal")
  assert pca.dataset.pca_components == 50 and pca.model.name == "mlp"
  assert pca.dataset.split == "covariate" and pca.train.steps == 600
  assert primeflow_perturbench.get_config("runlocal").model.base_channels == 8
  for bad in ("unet", "mlp_pca", "runlocal_runlocal", "big", "runlocal_paper"):
    with pytest.raises(ValueError, match="unknown variant"):
      primeflow_perturbench.get_config(bad)


def test_mixflow_and_cfm_share_the_task():
  mix = mixflow_perturbench.get_config("covariate_runlocal")
  cfm = cfm_perturbench.get_config("covariate_runlocal")
  pf = primeflow_perturbench.get_config("covariate_runlocal")
  assert mix.dataset.to_dict() == cfm.dataset.to_dict() == pf.dataset.to_dict()
  assert mix.base.name == "gmm" and cfm.base.name == "gaussian"
  a, b = mix.to_dict(), cfm.to_dict()
  assert {k: v for k, v in a.items() if k != "base"} == {k: v for k, v in b.items() if k != "base"}
  with pytest.raises(ValueError, match="unknown variant"):
    mixflow_perturbench.get_config("mlp")


def test_methods_sweep_points_are_the_configs_they_name():
  """Each point of the "methods" sweep trains exactly the config it names (eval aside)."""
  from flowzoo import config as config_lib
  from flowzoo.sweep import sweeps_from_file
  path = primeflow_perturbench.__file__
  points = dict(sweeps_from_file(f"{path}:covariate_runlocal")["methods"])
  base = primeflow_perturbench.get_config("covariate_runlocal")
  for name, other in (("primeflow_mlp", primeflow_perturbench.get_config("mlp_covariate_runlocal")),
                      ("mixflow", mixflow_perturbench.get_config("covariate_runlocal")),
                      ("cfm", cfm_perturbench.get_config("covariate_runlocal"))):
    got = config_lib.as_stored(config_lib.apply_overrides(base, points[name]).to_dict())
    want = config_lib.as_stored(config_lib.resolved(other).to_dict())
    assert config_lib.config_diff(got, want, ("eval",)) == [], name
  assert points["primeflow_unet"] == {} and "eval" not in points["mixflow"]


def test_section_overrides_refuses_sections_the_base_lacks():
  from flowzoo import config as config_lib
  base = primeflow_perturbench.get_config("runlocal")
  other = primeflow_perturbench.get_config("mlp_runlocal")
  with other.unlocked():
    other.extra = {"x": 1}
  with pytest.raises(KeyError, match=r"\['extra'\] are not sections of the base config"):
    config_lib.section_overrides(base, other)

"""The experiment files of issue 16's grid: each composes into a valid config of the converged recipe, the grid
writes its runs where qc_ablation's qat_from looks for them, and the QC variants are the paper's Table 7."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from yoloq.config import CONF_DIR, group_choices, validate

GRID = ["paper_grid", "paper_grid_asym", "qc_ablation", "first_last_low", "per_channel_weights", "other_models"]


def compose_sweep_job(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("experiment", GRID)
def test_every_experiment_composes_to_the_converged_recipe(experiment):
    cfg = compose_sweep_job([f"experiment={experiment}"])
    validate(cfg)
    assert cfg.hydra.runtime.choices.trainer == "converged" and cfg.experiment_name == experiment
    assert cfg.hydra.sweep.dir == f"runs/{experiment}" and cfg.hydra.sweeper.params


def test_qc_ablation_reads_the_grid_runs_of_its_seed():
    grid = compose_sweep_job(["experiment=paper_grid", "method=ema_qc", "bits=4", "seed=2"])
    subdir = OmegaConf.select(grid, "hydra.sweep.subdir")  # resolvable without a running Hydra job
    assert f"{grid.hydra.sweep.dir}/{subdir}" == "runs/paper_grid/ema_qc-w4a4-s2"
    ablation = compose_sweep_job(["experiment=qc_ablation", "seed=2", "+qc_variant=per_tensor_scale"])
    assert ablation.qat_from == "runs/paper_grid/ema_qc-w4a4-s2" and ablation.method.name == "ema_qc"
    assert OmegaConf.to_container(ablation.method.qc) == {"enabled": True, "per_channel": False, "scale": True,
                                                          "shift": False}


def test_qc_variants_are_table_7():
    variants = {}
    for name in group_choices("qc_variant"):
        cfg = compose_sweep_job(["method=ema_qc", f"+qc_variant={name}"])
        variants[name] = (cfg.method.qc.per_channel, cfg.method.qc.scale, cfg.method.qc.shift)
    assert sorted(variants.values()) == sorted((pc, sc, sh) for pc in (False, True)
                                               for sc, sh in ((True, False), (False, True), (True, True)))
    swept = compose_sweep_job(["experiment=qc_ablation"]).hydra.sweeper.params["+qc_variant"].split(",")
    assert sorted(swept) == sorted(set(variants) - {"per_channel"})  # per-channel both: the grid run's own QC


def test_the_asymmetric_grid_differs_from_the_paper_grid_only_in_its_activations():
    signed, asym = (compose_sweep_job([f"experiment={e}", "method=ema_qc", "bits=3", "seed=1"])
                    for e in ("paper_grid", "paper_grid_asym"))
    assert (asym.quant.act_asymmetric, asym.quant.act_zero_point) == (True, "integer")
    assert not signed.quant.act_asymmetric
    plain = lambda value: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value  # noqa: E731
    for key in ("trainer", "method", "eval", "export", "w_bits", "a_bits", "seed"):
        assert plain(asym[key]) == plain(signed[key]), key

"""The experiment files of issue 16's grid: each composes into a valid config of the converged recipe, the grid
writes its runs where qc_ablation's qat_from looks for them, and the QC variants are the paper's Table 7."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from yoloq.config import CONF_DIR, group_choices, validate

SIGNED = ["paper_grid", "qc_ablation", "first_last_low", "per_channel_weights"]
GRID = SIGNED + [f"{e}_asym" for e in SIGNED] + ["qc_training_asym", "other_models"]


def compose_sweep_job(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("experiment", GRID)
def test_every_experiment_composes_to_the_converged_recipe(experiment):
    cfg = compose_sweep_job([f"experiment={experiment}"])
    validate(cfg)
    assert cfg.hydra.runtime.choices.trainer == "converged" and cfg.experiment_name == experiment
    assert cfg.hydra.sweep.dir == f"runs/{experiment}" and cfg.hydra.sweeper.params


@pytest.mark.parametrize("grid_name", ["paper_grid", "paper_grid_asym"])
def test_qc_ablation_reads_the_grid_runs_of_its_seed(grid_name):
    suffix = grid_name.removeprefix("paper_grid")
    grid = compose_sweep_job([f"experiment={grid_name}", "method=ema_qc", "bits=4", "seed=2"])
    subdir = OmegaConf.select(grid, "hydra.sweep.subdir")  # resolvable without a running Hydra job
    assert f"{grid.hydra.sweep.dir}/{subdir}" == f"runs/{grid_name}/ema_qc-w4a4-s2"
    ablation = compose_sweep_job([f"experiment=qc_ablation{suffix}", "seed=2", "+qc_variant=per_tensor_scale"])
    assert ablation.qat_from == f"runs/{grid_name}/ema_qc-w4a4-s2" and ablation.method.name == "ema_qc"
    assert ablation.quant == grid.quant  # else the run refuses the source model (qat_from checks the recipe)
    assert OmegaConf.to_container(ablation.method.qc) == {"enabled": True, "per_channel": False, "scale": True,
                                                          "shift": False}


def test_qc_training_asym_trains_the_default_qc_otherwise_on_qc_ablation_asyms_models():
    """Only QC's learning rate (swept) or length (on the command line) differ from the grid run's own QC, on the
    same QAT models as qc_ablation_asym; the report then labels them apart (report/compare.py, _qc_training)."""
    ablation = compose_sweep_job(["experiment=qc_ablation_asym", "seed=1", "bits=3", "+qc_variant=per_channel"])
    default = compose_sweep_job(["method=ema_qc"])
    swept = compose_sweep_job(["experiment=qc_training_asym", "seed=1", "bits=3"]).hydra.sweeper.params
    assert swept["+qc_variant"] == "per_channel" and swept["seed"] == "0,1,2"
    lrs = [float(v) for v in swept["trainer.qc.lr"].split(",")]
    assert lrs and default.trainer.qc.lr not in lrs
    for lr in lrs:
        run = compose_sweep_job(["experiment=qc_training_asym", "seed=1", "bits=3", "+qc_variant=per_channel",
                                 f"trainer.qc.lr={lr}"])
        assert run.qat_from == ablation.qat_from == "runs/paper_grid_asym/ema_qc-w3a3-s1"
        assert run.quant == ablation.quant and run.method == ablation.method == default.method
        assert OmegaConf.to_container(run.trainer.qc) == {**OmegaConf.to_container(default.trainer.qc), "lr": lr}


def test_qc_variants_are_table_7():
    variants = {}
    for name in group_choices("qc_variant"):
        cfg = compose_sweep_job(["method=ema_qc", f"+qc_variant={name}"])
        variants[name] = (cfg.method.qc.per_channel, cfg.method.qc.scale, cfg.method.qc.shift)
    assert sorted(variants.values()) == sorted((pc, sc, sh) for pc in (False, True)
                                               for sc, sh in ((True, False), (False, True), (True, True)))
    swept = compose_sweep_job(["experiment=qc_ablation"]).hydra.sweeper.params["+qc_variant"].split(",")
    assert sorted(swept) == sorted(set(variants) - {"per_channel"})  # per-channel both: the grid run's own QC


@pytest.mark.parametrize("experiment", SIGNED)
def test_each_asymmetric_experiment_differs_from_its_signed_one_only_in_its_activations(experiment):
    signed, asym = (compose_sweep_job([f"experiment={e}", "method=ema_qc", "bits=3", "seed=1"])
                    for e in (experiment, f"{experiment}_asym"))
    assert (asym.quant.act_asymmetric, asym.quant.act_zero_point) == (True, "integer")
    assert not signed.quant.act_asymmetric
    plain = lambda value: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value  # noqa: E731
    for key in ("trainer", "method", "eval", "export", "w_bits", "a_bits", "seed", "logger"):
        assert plain(asym[key]) == plain(signed[key]), key
    swept = lambda cfg: {k: v for k, v in plain(cfg.hydra.sweeper.params).items()  # noqa: E731
                         if experiment != "paper_grid" or k != "bits"}  # its sweep is W3A3 (see the file)
    assert swept(asym) == swept(signed)
    other = lambda q: {k: v for k, v in plain(q).items() if not k.startswith("act_")}  # noqa: E731
    assert other(asym.quant) == other(signed.quant)


def test_converged_long_is_the_converged_recipe_at_160_fp_and_32_qat_epochs():
    """Same FP settings, so it shares the FP cache entry of `trainer=converged trainer.fp.epochs=160` (the cache
    key is built from cfg.trainer.fp); QAT re-estimates BN at its end, which report/convergence.py keeps apart."""
    long = compose_sweep_job(["trainer=converged_long"])
    validate(long)
    by_hand = compose_sweep_job(["trainer=converged", "trainer.fp.epochs=160", "trainer.qat.epochs=32",
                                 "trainer.qat.bn_refresh=125"])
    assert long.trainer.fp.epochs == 160 and long.trainer.qat.epochs == 32 and long.trainer.qat.bn_refresh == 125
    assert OmegaConf.to_container(long.trainer) == OmegaConf.to_container(by_hand.trainer)
    assert long.trainer != compose_sweep_job(["trainer=converged"]).trainer

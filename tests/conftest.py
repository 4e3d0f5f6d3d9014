"""Shared fixtures: tiny configs composed with Hydra, exactly as scripts/train.py would see them."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir

os.environ.setdefault("YOLO_OFFLINE", "1")

from yoloq.config import CONF_DIR  # noqa: E402

TINY = [
    "data.n_train=48", "data.n_val=16", "data.img_size=128", "data.imgsz=128", "data.min_object=12",
    "data.max_object=64", "data.max_objects=4", "trainer.batch=8", "trainer.workers=0", "trainer.fp.epochs=1",
    "trainer.qat.epochs=1", "quant.calib_batches=1", "progress=false",
    "trainer.adapt_threads=false",  # a thread count that follows the machine's load changes float reductions
    "export.onnx=false",  # tests/export and the end-to-end test in tests/engine/test_pipeline.py cover it
]


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("config", overrides=overrides)


@pytest.fixture
def tiny_cfg(tmp_path):
    """A config for a run that finishes in well under a minute, caching into tmp_path."""

    def make(*extra: str):
        return compose_config(TINY + [f"cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}", *extra])

    return make

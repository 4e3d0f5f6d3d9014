"""What QAT adds beyond the task loss, each as a trainer Callback, chosen by `method=`."""

from __future__ import annotations

from yoloq.engine.hooks import Callback
from yoloq.errors import UserError


def build_callbacks(method_cfg) -> list[Callback]:
    """The callbacks that make up a method (conf/method/<name>.yaml)."""
    if method_cfg.name == "lsq":
        return []  # plain LSQ: the task loss alone
    raise UserError(f"method={method_cfg.name} is not implemented: use method=lsq")

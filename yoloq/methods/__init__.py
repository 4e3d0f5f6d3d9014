"""What QAT adds beyond the task loss, each as a trainer Callback, chosen by `method=`
(conf/method/<name>.yaml switches the parts on; the training loop has no per-method branches)."""

from __future__ import annotations

from yoloq.callbacks import Callback
from yoloq.methods.dampen import OscillationDampening
from yoloq.methods.ema import EMACallback
from yoloq.methods.freeze import IterativeFreezing
from yoloq.methods.oscillation import TrackOscillations


def freeze_threshold_final(freeze_cfg, w_bits: int) -> float:
    table = {str(k): float(v) for k, v in freeze_cfg.threshold_final.items()}
    return table.get(str(w_bits), table["4"])


def build_callbacks(method_cfg, w_bits: int) -> list[Callback]:
    """The QAT callbacks of a method, in the order they must run after each step:
    tracking, then freezing (reads the tracker), then EMA (averages the frozen weights)."""
    m = method_cfg
    tracking = TrackOscillations(m.track.momentum, m.track.max_bits, m.track.threshold)
    callbacks: list[Callback] = [tracking]
    if m.dampen.enabled:
        callbacks.append(OscillationDampening(m.dampen.lambda_final, m.dampen.begin, m.track.max_bits))
    if m.freeze.enabled:
        callbacks.append(IterativeFreezing(tracking, m.freeze.threshold_start,
                                           freeze_threshold_final(m.freeze, w_bits), m.freeze.begin))
    if m.ema.enabled:
        callbacks.append(EMACallback(m.ema.get("decay"), m.ema.get("tau"), m.ema.horizon, m.ema.ramp))
    return callbacks

"""Model-agnostic fake quantization: LSQ quantizers, quantized Conv2d and ConvTranspose2d, model preparation."""

from .config import QuantConfig, QuantConfigError
from .lsq import LSQQuantizer
from .prepare import calibrate, dequantize_model, iter_quantizers, quant_parameters, quantize_model
from .qconv import QuantConv2d
from .qconv_transpose import QuantConvTranspose2d

__all__ = [
    "LSQQuantizer",
    "QuantConv2d",
    "QuantConvTranspose2d",
    "QuantConfig",
    "QuantConfigError",
    "quantize_model",
    "calibrate",
    "quant_parameters",
    "iter_quantizers",
    "dequantize_model",
]

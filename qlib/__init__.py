"""qlib: the quantization library behind the qbook.

Modules, one concept each:

- :mod:`qlib.quantizers`: uniform affine quantization (scale, zero point, fake quant), TFLite's rounding.
- :mod:`qlib.ranges`: range setters (min-max, percentile, MSE, the LPIRC greedy search).
- :mod:`qlib.graph`: who feeds whom in a functional Keras model.
- :mod:`qlib.folding`: BatchNorm folding and ReLU6 -> ReLU, function-preserving rewrites.
- :mod:`qlib.tflite`: full-integer TFLite conversion and reading back what TFLite chose.
- :mod:`qlib.plotting`: the book's figures.
"""

from .quantizers import (
    QuantParams,
    compute_params,
    dequantize,
    fake_quant,
    fit_params,
    integer_range,
    quantize,
    round_half_away,
)

__version__ = "0.1.0"

__all__ = [
    "QuantParams",
    "compute_params",
    "dequantize",
    "fake_quant",
    "fit_params",
    "integer_range",
    "quantize",
    "round_half_away",
]

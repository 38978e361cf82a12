"""qlib: the quantization library behind the qbook.

One module per idea of the book (``from qlib import dfq``), in five layers. A module imports only
from its own layer or a lower one, and any module may use the assets; the core is numpy only.
``tests/test_architecture.py`` enforces both, and checks this index against the files.
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

#: The layers, lowest first: ``{layer: {module: what it is for}}``.
MODULES = {
    "core": {
        "quantizers": "uniform affine quantization: scale, zero point, fake quant, TFLite's rounding",
        "ranges": "range setters: min-max, percentile, MSE, the LPIRC greedy step/offset search",
        "score": "the LPIRC 2018 score",
        "_checks": "argument checks shared by every module",
    },
    "graph": {
        "layers": "layer rules in one place: weighted kinds, activations, channel axes, TFLite layouts",
        "graph": "who feeds whom in a functional Keras model; the one chain walker",
        "folding": "BatchNorm folding, ReLU6 -> ReLU, and the model rebuild every transform uses",
    },
    "methods": {
        "simulate": "simulated int8 quantization placed where TFLite quantizes",
        "dfq": "data-free quantization: equalization, high-bias absorption, bias correction",
        "pq": "product quantization (Q-CNN): codebooks on the layer's response, look-up-table inference",
        "lowrank": "low-rank pointwise convolutions: one 1x1 conv as two thinner ones by truncated SVD",
        "distill": "knowledge distillation: the label + softened-teacher loss, a frozen-teacher distiller",
        "adaround": "AdaRound: learned up-or-down rounding of the weights, layer by layer, in numpy",
    },
    "deploy": {
        "tflite": "the real TFLite converter, and the LiteRT runtime with its three kernel sets",
        "flatbuffer": "a .tflite file read through the schema module LiteRT ships: tensors, ops, grids",
        "export": "qlib's grids in a real int8 .tflite (FakeQuant graph, converter, checked rewrite)",
        "integer": "integer-only numpy interpreter, bit-exact with TFLite's reference kernels",
        "evaluate": "accuracy with confidence intervals and fidelity, for Keras and TFLite models",
        "deploy": "latency on LiteRT's kernels, the per-op profiler, benchmark_model's output parsed",
    },
    "book": {
        "analysis": "per-layer statistics behind Part II",
        "plotting": "the book's figures (plotly, static-HTML sliders and dropdowns)",
        "results": "the chapter kit: shipped results by name, look-ups, glue",
        "exercises": "checkers for the exercises",
        "_mystnb": "MyST-NB plugin rendering plotly figures in the HTML book",
    },
    "assets": {
        "data": "offline data (Fashion-MNIST, the ImageNet weights), checked by sha256",
        "torchpickle": "a restricted reader for legacy PyTorch weight files (no code runs)",
        "models": "MobileNet v1/V2 builders, standard or quantization-friendly",
        "zoo": "the trained Fashion-MNIST model zoo",
        "imagenet": "the pretrained ImageNet MobileNetV2, ported exactly",
        "cache": "cached sweep results keyed by model, configuration and code version",
        "photos": "the offline natural photo set (Debian and scikit-image photos), checked by sha256",
    },
}

#: The order of the layers; assets may be used by any layer.
LAYERS = ("core", "graph", "methods", "deploy", "book")


def _index() -> str:
    lines = []
    for layer, modules in MODULES.items():
        where = "any layer may use them" if layer == "assets" else f"layer {LAYERS.index(layer) + 1}"
        lines += ["", f"**{layer}** ({where}):", ""]
        lines += [f"- :mod:`qlib.{name}`: {what}" for name, what in modules.items()]
    return "\n".join(lines)


__doc__ += _index()

__all__ = [
    "MODULES",
    "LAYERS",
    "QuantParams",
    "compute_params",
    "dequantize",
    "fake_quant",
    "fit_params",
    "integer_range",
    "quantize",
    "round_half_away",
]

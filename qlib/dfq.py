"""Data-free quantization (Nagel et al., ICCV 2019), in plain numpy on tf.keras models.

The pipeline, in AIMET's order:

1. ReLU6 -> ReLU (ReLU commutes with positive per-channel scaling; ReLU6 does not) and fold
   BatchNorm, remembering each folded BN's ``beta`` and ``gamma``: the layer's pre-activation
   output is modelled as ``N(beta, gamma**2)`` per channel.
2. **Cross-layer equalization** (:func:`equalize`): for every pair of weighted layers joined only
   by ReLU / padding / pooling, scale output channel ``i`` of the first by ``1/s_i`` and input
   channel ``i`` of the second by ``s_i``, with ``s_i = sqrt(r1_i * r2_i) / r2_i`` (``r``: the
   channel's weight range), so both ranges become ``sqrt(r1_i * r2_i)``. Iterated over all pairs
   (MobileNet's pointwise -> depthwise -> pointwise chains) until the scales stop changing. The
   float function is unchanged.
3. **High-bias absorption** (:func:`absorb_high_biases`): move ``c_i = max(0, beta_i - 3 gamma_i)``
   out of the first layer's bias into the next layer's bias (through its weights). Exact wherever
   the pre-activation stays above ``c_i`` (99.87% of a normal) and away from zero-padded borders.
4. **Bias correction** (:func:`correct_bias`): quantizing weights ``W -> W + eps`` shifts each
   output's mean by ``eps @ E[x]``; subtract it. ``E[x]`` analytically from the preceding BN
   (the mean of a ReLU-clipped normal) or empirically from calibration data.

:func:`dfq` runs all of it and returns the float model to quantize, with a :class:`DFQReport`.

Unsupported layers: a conv/dense with an inline activation other than linear, or a depthwise
layer with ``depth_multiplier > 1`` as the second layer of a pair, raise a ``ValueError`` naming
the layer. Structures DFQ cannot rescale without changing the function (a tensor that feeds a
residual ``Add`` as well as the next conv, a BatchNorm that does not follow a conv) are left as
they are: such pairs are simply not formed, and unfolded BatchNorms are listed in
``DFQReport.skipped`` with a warning.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import keras
import numpy as np

from .folding import _is_relu6, rebuild
from .graph import WEIGHTED, _check_functional, batchnorm_pairs, consumers, producers

#: layers a channel scale passes through unchanged (positive scaling commutes with them)
SCALE_INVARIANT = (keras.layers.ZeroPadding2D, keras.layers.Dropout, keras.layers.GlobalAveragePooling2D,
                   keras.layers.AveragePooling2D, keras.layers.MaxPooling2D)


def _is_relu(layer) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        return layer.max_value is None and float(layer.negative_slope) == 0 and float(layer.threshold) == 0
    return isinstance(layer, keras.layers.Activation) and getattr(layer.activation, "__name__", "") == "relu"


@dataclass(frozen=True)
class Pair:
    """Two weighted layers that can be equalized: ``first`` feeds ``second`` through ``between``."""

    first: str
    second: str
    relu: bool
    between: tuple = ()

    def __repr__(self) -> str:
        return f"Pair({self.first} -> {' -> '.join(self.between) + ' -> ' if self.between else ''}{self.second})"


def equalization_pairs(model) -> list[Pair]:
    """Every (weighted layer, next weighted layer) pair joined by ReLU / padding / pooling only.

    The first layer's output must feed nothing else (a residual branch cannot be rescaled), and
    there must be no ReLU6 on the way (run :func:`qlib.folding.replace_relu6` first).

    Examples
    --------
    >>> from qlib.models import mobilenet_v1
    >>> from qlib.folding import fold_batchnorm
    >>> equalization_pairs(fold_batchnorm(mobilenet_v1(variant="friendly")))[:2]
    [Pair(conv1 -> conv1_relu -> block1_dw), Pair(block1_dw -> block1_pw)]
    """
    _check_functional(model)
    pairs = []
    for layer in model.layers:
        if not isinstance(layer, WEIGHTED):
            continue
        between, relu, current = [], False, layer
        while True:
            nxt = consumers(current, model)
            if len(nxt) != 1 or len(producers(nxt[0])) != 1:
                break
            current = nxt[0]
            if isinstance(current, WEIGHTED):
                pairs.append(Pair(layer.name, current.name, relu, tuple(between)))
                break
            if _is_relu(current) and not relu:
                relu = True
            elif not isinstance(current, SCALE_INVARIANT):
                break
            between.append(current.name)
    return pairs


def _out_range(layer, kernel):
    """Per-output-channel max |w| of a first layer."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return np.abs(kernel).reshape(-1, kernel.shape[2] * kernel.shape[3]).max(axis=0)
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0)


def _in_range(layer, kernel):
    """Per-input-channel max |w| of a second layer."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        if kernel.shape[3] != 1:
            raise ValueError(f"layer {layer.name!r}: depth_multiplier > 1 is not supported by equalization")
        return np.abs(kernel).reshape(-1, kernel.shape[2]).max(axis=0)
    if isinstance(layer, keras.layers.Dense):
        return np.abs(kernel).max(axis=1)
    return np.abs(np.moveaxis(kernel, 2, 0)).reshape(kernel.shape[2], -1).max(axis=1)


def _scale_in(layer, kernel, s):
    """Multiply the second layer's input channel i by s_i."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return kernel * s[None, None, :, None]
    if isinstance(layer, keras.layers.Dense):
        return kernel * s[:, None]
    return kernel * s[None, None, :, None]


def _scale_out(layer, kernel, s):
    """Divide the first layer's output channel i by s_i."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return kernel / s.reshape(kernel.shape[2], kernel.shape[3])
    return kernel / s


@dataclass
class DFQReport:
    """What :func:`dfq` did: pairs, iterations, per-layer ranges before and after, bias shifts."""

    pairs: list = field(default_factory=list)
    iterations: int = 0
    ranges_before: dict = field(default_factory=dict)
    ranges_after: dict = field(default_factory=dict)
    absorbed: dict = field(default_factory=dict)
    bias_corrections: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    seconds: float = 0.0

    def __repr__(self) -> str:
        return (f"DFQReport({len(self.pairs)} pairs equalized in {self.iterations} iterations, "
                f"{len(self.absorbed)} high biases absorbed, {len(self.bias_corrections)} biases corrected, "
                f"{len(self.skipped)} skipped, {self.seconds:.2f} s)")


class _State:
    """Weights (float64) and BN statistics of a folded model, edited in place by the DFQ steps."""

    def __init__(self, model, stats):
        self.model = model
        self.layers = {l.name: l for l in model.layers if isinstance(l, WEIGHTED)}
        self.kernel = {n: np.asarray(l.get_weights()[0], np.float64) for n, l in self.layers.items()}
        self.bias = {n: (np.asarray(l.get_weights()[1], np.float64) if l.use_bias else
                         np.zeros(l.get_weights()[0].shape[-1] if not isinstance(l, keras.layers.DepthwiseConv2D)
                                  else np.prod(l.get_weights()[0].shape[2:])))
                     for n, l in self.layers.items()}
        self.stats = {n: (np.asarray(b, np.float64), np.asarray(g, np.float64)) for n, (b, g) in stats.items()}

    def write(self):
        for n, layer in self.layers.items():
            k = self.kernel[n].astype(np.float32)
            if layer.use_bias:
                layer.set_weights([k, self.bias[n].astype(np.float32)])
            else:
                layer.set_weights([k])
        return self.model


def prepare(model):
    """ReLU6 -> ReLU, fold BatchNorm, and keep each folded BN's ``(beta, gamma)`` per layer.

    Returns ``(folded model, {layer: (beta, gamma)})``. Every weighted layer gets a bias.

    Examples
    --------
    >>> from qlib.models import mobilenet_v1
    >>> folded, stats = prepare(mobilenet_v1(alpha=0.25))
    >>> sorted(stats)[:2], stats["conv1"][0].shape
    (['block10_dw', 'block10_pw'], (8,))
    """
    _check_functional(model)
    from .folding import fold_weights

    stats, replace, weights, skip = {}, {}, {}, set()
    for pair in batchnorm_pairs(model, strict=False):
        bn, layer = model.get_layer(pair.bn), model.get_layer(pair.layer)
        beta = np.asarray(bn.beta, np.float64) if bn.beta is not None else np.zeros(bn.moving_mean.shape)
        gamma = np.asarray(bn.gamma, np.float64) if bn.gamma is not None else np.ones(bn.moving_mean.shape)
        stats[pair.layer] = (beta, np.abs(gamma))
        weights[pair.layer] = fold_weights(layer, bn)
        skip.add(pair.bn)
    for layer in model.layers:  # one rebuild: ReLU6 -> ReLU, BN folded, a bias on every weighted layer
        if isinstance(layer, WEIGHTED) and getattr(layer.activation, "__name__", "linear") != "linear":
            raise ValueError(f"layer {layer.name!r}: inline activation {layer.activation.__name__!r} is not "
                             "supported by DFQ; use a separate ReLU layer after it")
        if _is_relu6(layer):
            replace[layer.name] = keras.layers.ReLU(name=layer.name)
        elif isinstance(layer, WEIGHTED) and (layer.name in weights or not layer.use_bias):
            cfg = layer.get_config()
            cfg["use_bias"] = True
            replace[layer.name] = layer.__class__.from_config(cfg)
            if layer.name not in weights:
                k = layer.get_weights()[0]
                n_out = k.shape[2] * k.shape[3] if isinstance(layer, keras.layers.DepthwiseConv2D) else k.shape[-1]
                weights[layer.name] = [k, np.zeros(n_out, np.float32)]
    return rebuild(model, replace=replace, skip=skip, weights=weights), stats


def equalize(model, max_iterations: int = 500, tol: float = 1e-7, report: DFQReport | None = None,
             _state: _State | None = None):
    """Cross-layer equalization; returns a model with the same function (ReLU6 made ReLU, BN folded).

    Examples
    --------
    >>> from qlib.models import mobilenet_v2
    >>> m = mobilenet_v2(alpha=0.35)
    >>> eq = equalize(m)
    >>> x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    >>> float(np.abs(eq(x).numpy() - prepare(m)[0](x).numpy()).max()) < 1e-4
    True
    """
    state = _state or _State(*prepare(model))
    report = report if report is not None else DFQReport()
    pairs = equalization_pairs(state.model)
    report.pairs = pairs
    for p in pairs:
        report.ranges_before.setdefault(p.first, _out_range(state.layers[p.first], state.kernel[p.first]).copy())
    for it in range(1, max_iterations + 1):
        change = 0.0
        for p in pairs:
            l1, l2 = state.layers[p.first], state.layers[p.second]
            r1 = _out_range(l1, state.kernel[p.first])
            r2 = _in_range(l2, state.kernel[p.second])
            if r1.shape != r2.shape:
                report.skipped.append(f"{p}: {r1.size} outputs vs {r2.size} inputs")
                continue
            ok = (r1 > 0) & (r2 > 0)
            s = np.ones_like(r1)
            s[ok] = np.sqrt(r1[ok] * r2[ok]) / r2[ok]
            state.kernel[p.first] = _scale_out(l1, state.kernel[p.first], s)
            state.bias[p.first] = state.bias[p.first] / s
            if p.first in state.stats:
                beta, gamma = state.stats[p.first]
                state.stats[p.first] = (beta / s, gamma / s)
            state.kernel[p.second] = _scale_in(l2, state.kernel[p.second], s)
            change = max(change, float(np.max(np.abs(np.log(s)))))
        report.iterations = it
        if change < tol:
            break
    for p in pairs:
        report.ranges_after[p.first] = _out_range(state.layers[p.first], state.kernel[p.first]).copy()
    if _state is None:
        return state.write()
    return state


def _constant_response(layer, kernel, v):
    """Output of a conv/dense ``kernel`` (no bias) for an input equal to ``v[i]`` on every position
    of channel ``i``, ignoring zero-padded borders: the bias change that a constant input shift
    (absorption) or a weight error times a mean input (bias correction) amounts to."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return kernel.sum(axis=(0, 1))[:, 0] * v
    if isinstance(layer, keras.layers.Dense):
        return v @ kernel
    return np.einsum("hwio,i->o", kernel, v)


def absorb_high_biases(state: _State, report: DFQReport, n_sigma: float = 3.0):
    """High-bias absorption over equalization pairs with a ReLU between (edits ``state``).

    ``state`` is the working copy :func:`dfq` keeps (weights, biases, BN statistics).

    Examples
    --------
    >>> inp = keras.Input((4,))
    >>> h = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(2, use_bias=False, name="a")(inp))
    >>> m = keras.Model(inp, keras.layers.Dense(1, name="b")(keras.layers.ReLU()(h)))
    >>> m.get_layer("bn").set_weights([np.ones(2), np.array([5.0, 0.0]), np.zeros(2), np.ones(2)])
    >>> state, report = _State(*prepare(m)), DFQReport()
    >>> _ = absorb_high_biases(state, report)
    >>> report.absorbed["a"].round(3).tolist()            # beta - 3 gamma, where positive
    [2.0, 0.0]
    """
    for p in equalization_pairs(state.model):
        if not p.relu or p.first not in state.stats:
            continue
        beta, gamma = state.stats[p.first]
        c = np.maximum(0.0, beta - n_sigma * gamma)
        if not np.any(c > 0):
            continue
        shift = _constant_response(state.layers[p.second], state.kernel[p.second], c)
        state.bias[p.first] = state.bias[p.first] - c
        state.stats[p.first] = (beta - c, gamma)
        state.bias[p.second] = state.bias[p.second] + shift
        report.absorbed[p.first] = c
    return state


def clipped_normal_mean(mu, sigma):
    """``E[max(0, X)]`` for ``X ~ N(mu, sigma**2)``: the mean of a ReLU output (analytic).

    Examples
    --------
    >>> round(float(clipped_normal_mean(0.0, 1.0)), 6)   # 1 / sqrt(2 pi)
    0.398942
    >>> float(clipped_normal_mean(5.0, 1e-9))
    5.0
    """
    mu, sigma = np.asarray(mu, np.float64), np.maximum(np.asarray(sigma, np.float64), 1e-12)
    z = mu / sigma
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    return sigma * pdf + mu * cdf


def _expected_inputs(state: _State, empirical: dict | None):
    """Per layer: the expected value of each input channel, analytic from the preceding layer's
    BN stats (through ReLU or not), or empirical (from ``empirical``) when given."""
    out = {}
    for p in equalization_pairs(state.model):
        if empirical is not None and p.second in empirical:
            continue
        if p.first not in state.stats:
            continue
        beta, gamma = state.stats[p.first]
        out[p.second] = clipped_normal_mean(beta, gamma) if p.relu else beta
    if empirical is not None:
        out.update(empirical)
    return out


def correct_bias(model, quantized_weights: dict, stats: dict | None = None, calibration_data=None,
                 report: DFQReport | None = None, _state: _State | None = None):
    """Subtract each layer's expected output error ``eps @ E[x]`` from its bias.

    Parameters
    ----------
    model : keras.Model
        A folded model (from :func:`prepare`/:func:`dfq`); its biases are corrected in place.
    quantized_weights : dict
        ``{layer name: quantize-dequantized kernel}`` (what the integer model will use).
    stats : dict, optional
        ``{layer: (beta, gamma)}`` of each layer's pre-activation output, for the analytic
        (data-free) expectation of the next layer's input.
    calibration_data : array_like, optional
        Inputs for the empirical expectation instead (mean input of every layer).

    Examples
    --------
    >>> from qlib.models import mobilenet_v1
    >>> folded, stats = prepare(mobilenet_v1(alpha=0.25))
    >>> qw = {l.name: np.round(l.get_weights()[0] * 8) / 8 for l in folded.layers if isinstance(l, WEIGHTED)}
    >>> rep = DFQReport()
    >>> _ = correct_bias(folded, qw, stats, report=rep)
    >>> len(rep.bias_corrections) > 20
    True
    """
    state = _state or _State(model, stats or {})
    report = report if report is not None else DFQReport()
    empirical = None
    if calibration_data is not None:
        data = np.asarray(calibration_data, np.float32)
        if data.shape[0] == 0:
            raise ValueError("calibration_data is empty; pass inputs or None for the analytic correction")
        names = [n for n in state.layers if n in quantized_weights]
        probe = keras.Model(state.model.inputs, [state.model.get_layer(n).input for n in names])
        outs = probe.predict(data, verbose=0)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        empirical = {n: o.reshape(-1, o.shape[-1]).mean(axis=0).astype(np.float64) for n, o in zip(names, outs)}
    expected = _expected_inputs(state, empirical)
    for name, qk in quantized_weights.items():
        if name not in state.layers or name not in expected:
            continue
        eps = np.asarray(qk, np.float64) - state.kernel[name]
        shift = _constant_response(state.layers[name], eps, expected[name])
        state.bias[name] = state.bias[name] - shift
        report.bias_corrections[name] = shift
    if _state is None:
        return state.write()
    return state


def quantized_kernels(model, num_bits: int = 8, per_channel: bool = False) -> dict:
    """``{layer: fake-quantized kernel}`` for every weighted layer, symmetric narrow-range like TFLite.

    Examples
    --------
    >>> from qlib.models import mobilenet_v1
    >>> qk = quantized_kernels(mobilenet_v1(alpha=0.25), num_bits=4)
    >>> len(np.unique(qk["block1_pw"])) <= 15
    True
    """
    from .simulate import quantize_kernel

    return {layer.name: quantize_kernel(layer, layer.get_weights()[0], num_bits, per_channel)[0]
            for layer in model.layers if isinstance(layer, WEIGHTED)}


def dfq(model, weight_bits: int | None = 8, equalization: bool = True, bias_absorption: bool = True,
        bias_correction: bool = True, per_channel: bool = False, calibration_data=None):
    """The whole data-free pipeline. Returns ``(float model ready for quantization, DFQReport)``.

    With ``bias_correction`` the biases absorb the expected error of quantizing the weights to
    ``weight_bits`` (per tensor unless ``per_channel``): quantize the returned model with the same
    settings. ``calibration_data`` switches bias correction from analytic to empirical.

    Examples
    --------
    >>> from qlib.models import mobilenet_v2
    >>> model, report = dfq(mobilenet_v2(alpha=0.35), weight_bits=8)
    >>> report
    DFQReport(36 pairs equalized in ... iterations, 0 high biases absorbed, 36 biases corrected, 0 skipped, ... s)
    """
    start = time.time()
    report = DFQReport()
    folded, stats = prepare(model)
    state = _State(folded, stats)
    if equalization:
        equalize(None, report=report, _state=state)
    if bias_absorption:
        absorb_high_biases(state, report)
    state.write()
    if bias_correction and weight_bits is not None:
        qk = quantized_kernels(state.model, weight_bits, per_channel)
        correct_bias(state.model, qk, calibration_data=calibration_data, report=report, _state=state)
        state.write()
    unsupported = [l.name for l in folded.layers if isinstance(l, keras.layers.BatchNormalization)]
    if unsupported:
        warnings.warn(f"BatchNormalization layers left unfolded (not after a conv): {unsupported}")
        report.skipped += unsupported
    report.seconds = time.time() - start
    return state.model, report

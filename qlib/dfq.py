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
It is a short chain of the public steps, each of which edits and records into one
:class:`DFQState` (the folded model's float64 weights, its BN statistics and the report)::

    state = DFQState.from_model(model)          # step 1
    equalize(state)                              # step 2
    absorb_high_biases(state)                    # step 3
    correct_bias(state, weight_bits=8)           # step 4
    model, report = state.to_model(), state.report

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

from ._checks import check_batch
from .folding import fold_weights, rebuild
from .graph import as_functional, batchnorm_pairs, walk
from .layers import (SCALE_COMMUTING, WEIGHTED, constant_response, inline_activation, input_ranges, is_relu,
                     is_relu6, num_outputs, output_ranges, quantize_kernel, scale_inputs, scale_outputs)

__all__ = ["Pair", "equalization_pairs", "DFQReport", "DFQState", "prepare", "equalize", "absorb_high_biases",
           "clipped_normal_mean", "correct_bias", "quantized_kernels", "dfq"]


@dataclass(frozen=True)
class Pair:
    """Two weighted layers that can be equalized: ``first`` feeds ``second`` through ``between``."""

    first: str
    second: str
    relu: bool
    between: tuple = ()

    def __repr__(self) -> str:
        return f"Pair({self.first} -> {' -> '.join(self.between) + ' -> ' if self.between else ''}{self.second})"


def _equalizable(layer, passed) -> bool:
    """A layer a channel scale passes through: one plain ReLU, and scale-commuting layers."""
    if is_relu(layer):
        return not any(is_relu(p) for p in passed)
    return isinstance(layer, SCALE_COMMUTING)


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
    model = as_functional(model)
    pairs = []
    for layer in model.layers:
        if not isinstance(layer, WEIGHTED):
            continue
        second, between = walk(layer, model, True, _equalizable, lambda l: isinstance(l, WEIGHTED))
        if second is not None:
            relu = any(is_relu(model.get_layer(n)) for n in between)
            pairs.append(Pair(layer.name, second.name, relu, between))
    return pairs


@dataclass
class DFQReport:
    """What the DFQ steps did: pairs, iterations, convergence, ranges before and after, bias shifts."""

    pairs: list = field(default_factory=list)
    iterations: int = 0
    converged: bool | None = None
    ranges_before: dict = field(default_factory=dict)
    ranges_after: dict = field(default_factory=dict)
    absorbed: dict = field(default_factory=dict)
    bias_corrections: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    seconds: float = 0.0

    def __repr__(self) -> str:
        conv = "" if self.converged is None else ("" if self.converged else " (NOT converged)")
        return (f"DFQReport({len(self.pairs)} pairs equalized in {self.iterations} iterations{conv}, "
                f"{len(self.absorbed)} high biases absorbed, {len(self.bias_corrections)} biases corrected, "
                f"{len(self.skipped)} skipped, {self.seconds:.2f} s)")


@dataclass(repr=False)
class DFQState:
    """The working copy every DFQ step edits and records into.

    Attributes
    ----------
    model : keras.Model
        The prepared model (ReLU6 -> ReLU, BN folded, a bias on every weighted layer); its weights
        are written from ``kernel``/``bias`` by :meth:`to_model`.
    kernel, bias : dict
        ``{layer: float64 array}`` for every weighted layer, edited in place by the steps.
    stats : dict
        ``{layer: (beta, gamma)}``: the folded BN's shift and |scale| per channel, i.e. the
        layer's pre-activation output modelled as ``N(beta, gamma**2)``.
    report : DFQReport
        What the steps did.

    Examples
    --------
    >>> from qlib.models import mobilenet_v1
    >>> state = DFQState.from_model(mobilenet_v1(alpha=0.25))
    >>> state
    DFQState(model='mobilenet_v1_0.25_standard', 28 weighted layers, 27 with BN statistics, DFQReport(0 pairs ...))
    >>> state.to_model().get_layer("conv1").use_bias
    True
    """

    model: keras.Model
    kernel: dict
    bias: dict
    stats: dict
    report: DFQReport = field(default_factory=DFQReport)

    @classmethod
    def from_model(cls, model) -> "DFQState":
        """Step 1: prepare ``model`` (:func:`prepare`) and read its weights in float64."""
        folded, stats = prepare(model)
        state = cls.from_prepared(folded, stats)
        unfolded = [l.name for l in folded.layers if isinstance(l, keras.layers.BatchNormalization)]
        if unfolded:
            warnings.warn(f"BatchNormalization layers left unfolded (not after a conv): {unfolded}", stacklevel=2)
            state.report.skipped += unfolded
        return state

    @classmethod
    def from_prepared(cls, folded, stats: dict | None = None) -> "DFQState":
        """A state over an already prepared model and its BN statistics (from :func:`prepare`)."""
        folded = as_functional(folded)
        layers = [l for l in folded.layers if isinstance(l, WEIGHTED)]
        kernel = {l.name: np.asarray(l.get_weights()[0], np.float64) for l in layers}
        bias = {l.name: (np.asarray(l.get_weights()[1], np.float64) if l.use_bias
                         else np.zeros(num_outputs(l, kernel[l.name]))) for l in layers}
        stats = {n: (np.asarray(b, np.float64), np.asarray(g, np.float64)) for n, (b, g) in (stats or {}).items()}
        return cls(folded, kernel, bias, stats)

    def layer(self, name: str):
        """The prepared model's layer ``name``."""
        return self.model.get_layer(name)

    def to_model(self) -> keras.Model:
        """Write the edited weights into the prepared model and return it (raises on non-finite weights)."""
        for name, k in self.kernel.items():
            b = self.bias[name]
            if not (np.all(np.isfinite(k)) and np.all(np.isfinite(b))):
                raise ValueError(f"DFQ produced non-finite weights in layer {name!r}; check the model's BN "
                                 "statistics and the calibration data for NaN/inf")
            layer = self.model.get_layer(name)
            layer.set_weights([k.astype(np.float32), b.astype(np.float32)] if layer.use_bias
                              else [k.astype(np.float32)])
        return self.model

    def __repr__(self) -> str:
        return (f"DFQState(model={self.model.name!r}, {len(self.kernel)} weighted layers, "
                f"{len(self.stats)} with BN statistics, {self.report!r})")


def _as_state(state) -> DFQState:
    if isinstance(state, DFQState):
        return state
    if isinstance(state, keras.Model):
        return DFQState.from_model(state)
    raise TypeError(f"expected a DFQState (DFQState.from_model(model)) or a keras.Model, got {type(state).__name__}")


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
    model = as_functional(model)
    stats, replace, weights, skip = {}, {}, {}, set()
    for pair in batchnorm_pairs(model, strict=False):
        bn, layer = model.get_layer(pair.bn), model.get_layer(pair.layer)
        beta = np.asarray(bn.beta, np.float64) if bn.beta is not None else np.zeros(bn.moving_mean.shape)
        gamma = np.asarray(bn.gamma, np.float64) if bn.gamma is not None else np.ones(bn.moving_mean.shape)
        stats[pair.layer] = (beta, np.abs(gamma))
        weights[pair.layer] = fold_weights(layer, bn)
        skip.add(pair.bn)
    for layer in model.layers:  # one rebuild: ReLU6 -> ReLU, BN folded, a bias on every weighted layer
        if isinstance(layer, WEIGHTED) and inline_activation(layer) != "linear":
            raise ValueError(f"layer {layer.name!r}: inline activation {inline_activation(layer)!r} is not "
                             "supported by DFQ; use a separate ReLU layer after it")
        if is_relu6(layer):
            replace[layer.name] = keras.layers.ReLU(name=layer.name)
        elif isinstance(layer, WEIGHTED) and (layer.name in weights or not layer.use_bias):
            cfg = layer.get_config()
            cfg["use_bias"] = True
            replace[layer.name] = layer.__class__.from_config(cfg)
            if layer.name not in weights:
                k = layer.get_weights()[0]
                weights[layer.name] = [k, np.zeros(num_outputs(layer, k), np.float32)]
    return rebuild(model, replace=replace, skip=skip, weights=weights), stats


def equalize(state, max_iterations: int = 500, tol: float = 1e-7) -> DFQState:
    """Step 2, cross-layer equalization (the float function is unchanged).

    ``state`` is a :class:`DFQState` (edited in place and returned) or a Keras model (prepared
    first). Iterates over all :func:`equalization_pairs` until no scale changes by more than
    ``tol`` (in log) or ``max_iterations`` is reached; ``report.converged`` says which, with a
    warning when it did not converge.

    Examples
    --------
    >>> from qlib.models import mobilenet_v2
    >>> m = mobilenet_v2(alpha=0.35)
    >>> state = equalize(m)
    >>> state.report.converged, len(state.report.pairs)
    (True, 36)
    >>> x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    >>> float(np.abs(state.to_model()(x).numpy() - prepare(m)[0](x).numpy()).max()) < 1e-4
    True
    """
    state = _as_state(state)
    if int(max_iterations) < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations!r}")
    report = state.report
    pairs = equalization_pairs(state.model)
    report.pairs = pairs
    if not pairs:
        warnings.warn(f"model {state.model.name!r} has no pair of weighted layers joined by ReLU/padding/pooling "
                      "only: nothing was equalized", stacklevel=2)
        report.converged = True
        return state
    for p in pairs:
        report.ranges_before.setdefault(p.first, output_ranges(state.layer(p.first), state.kernel[p.first]).copy())
    report.converged = False
    for it in range(1, int(max_iterations) + 1):
        change = 0.0
        for p in pairs:
            l1, l2 = state.layer(p.first), state.layer(p.second)
            r1 = output_ranges(l1, state.kernel[p.first])
            r2 = input_ranges(l2, state.kernel[p.second])
            if r1.shape != r2.shape:
                if it == 1:
                    report.skipped.append(f"{p}: {r1.size} outputs vs {r2.size} inputs")
                continue
            ok = (r1 > 0) & (r2 > 0)
            s = np.ones_like(r1)
            s[ok] = np.sqrt(r1[ok] * r2[ok]) / r2[ok]
            state.kernel[p.first] = scale_outputs(l1, state.kernel[p.first], 1.0 / s)
            state.bias[p.first] = state.bias[p.first] / s
            if p.first in state.stats:
                beta, gamma = state.stats[p.first]
                state.stats[p.first] = (beta / s, gamma / s)
            state.kernel[p.second] = scale_inputs(l2, state.kernel[p.second], s)
            change = max(change, float(np.max(np.abs(np.log(s)))))
        report.iterations = it
        if change < tol:
            report.converged = True
            break
    if not report.converged:
        warnings.warn(f"cross-layer equalization did not converge in {max_iterations} iterations (largest log-scale "
                      f"change {change:.2g} > tol {tol:g}); pass a larger max_iterations", stacklevel=2)
    for p in pairs:
        report.ranges_after[p.first] = output_ranges(state.layer(p.first), state.kernel[p.first]).copy()
    return state


def absorb_high_biases(state, n_sigma: float = 3.0) -> DFQState:
    """Step 3, high-bias absorption over equalization pairs with a ReLU between.

    Moves ``c = max(0, beta - n_sigma * gamma)`` out of the first layer's bias into the second
    layer's bias (through its weights). ``state`` is edited in place and returned.

    Examples
    --------
    >>> inp = keras.Input((4,))
    >>> h = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(2, use_bias=False, name="a")(inp))
    >>> m = keras.Model(inp, keras.layers.Dense(1, name="b")(keras.layers.ReLU()(h)))
    >>> m.get_layer("bn").set_weights([np.ones(2), np.array([5.0, 0.0]), np.zeros(2), np.ones(2)])
    >>> state = absorb_high_biases(DFQState.from_model(m))
    >>> state.report.absorbed["a"].round(3).tolist()            # beta - 3 gamma, where positive
    [2.0, 0.0]
    """
    state = _as_state(state)
    for p in equalization_pairs(state.model):
        if not p.relu or p.first not in state.stats:
            continue
        beta, gamma = state.stats[p.first]
        c = np.maximum(0.0, beta - n_sigma * gamma)
        if not np.any(c > 0):
            continue
        shift = constant_response(state.layer(p.second), state.kernel[p.second], c)
        state.bias[p.first] = state.bias[p.first] - c
        state.stats[p.first] = (beta - c, gamma)
        state.bias[p.second] = state.bias[p.second] + shift
        state.report.absorbed[p.first] = c
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


def _expected_inputs(state: DFQState, empirical: dict | None) -> dict:
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


def _mean_inputs(model, names, calibration_data) -> dict:
    data = check_batch(calibration_data, model.input.shape[1:], "calibration_data")
    probe = keras.Model(model.inputs, [model.get_layer(n).input for n in names])
    outs = probe.predict(data, verbose=0)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    means = {n: o.reshape(-1, o.shape[-1]).mean(axis=0).astype(np.float64) for n, o in zip(names, outs)}
    for n, m in means.items():
        if not np.all(np.isfinite(m)):
            raise ValueError(f"the calibration data gives non-finite inputs to layer {n!r}")
    return means


def correct_bias(state, quantized_weights: dict | None = None, weight_bits: int | None = 8,
                 per_channel: bool = False, calibration_data=None) -> DFQState:
    """Step 4, bias correction: subtract each layer's expected output error ``eps @ E[x]`` from its bias.

    Parameters
    ----------
    state : DFQState or keras.Model
        Edited in place and returned (a model is prepared first).
    quantized_weights : dict, optional
        ``{layer: quantize-dequantized kernel}`` (what the integer model will use); by default every
        weighted layer's kernel quantized to ``weight_bits`` like TFLite (:func:`quantized_kernels`).
    weight_bits : int
        Bit width of the default quantized weights.
    per_channel : bool
        Per-channel default quantized weights (per tensor otherwise).
    calibration_data : array_like, optional
        Inputs for the empirical expectation (mean input of every layer) instead of the analytic
        one from the BN statistics.

    Examples
    --------
    >>> from qlib.models import mobilenet_v1
    >>> state = DFQState.from_model(mobilenet_v1(alpha=0.25))
    >>> qw = {n: np.round(k * 8) / 8 for n, k in state.kernel.items()}
    >>> len(correct_bias(state, qw).report.bias_corrections) > 20
    True
    """
    state = _as_state(state)
    if quantized_weights is None:
        if weight_bits is None:
            raise ValueError("pass quantized_weights or weight_bits (the bit width the weights will be quantized to)")
        quantized_weights = quantized_kernels(state.to_model(), weight_bits, per_channel)
    empirical = None
    if calibration_data is not None:
        names = [n for n in state.kernel if n in quantized_weights]
        empirical = _mean_inputs(state.to_model(), names, calibration_data)
    expected = _expected_inputs(state, empirical)
    for name, qk in quantized_weights.items():
        if name not in state.kernel or name not in expected:
            continue
        eps = np.asarray(qk, np.float64) - state.kernel[name]
        shift = constant_response(state.layer(name), eps, expected[name])
        state.bias[name] = state.bias[name] - shift
        state.report.bias_corrections[name] = shift
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
    model = as_functional(model)
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
    state = DFQState.from_model(model)
    if equalization:
        equalize(state)
    if bias_absorption:
        absorb_high_biases(state)
    if bias_correction and weight_bits is not None:
        correct_bias(state, weight_bits=weight_bits, per_channel=per_channel, calibration_data=calibration_data)
    model = state.to_model()
    state.report.seconds = time.time() - start
    return model, state.report

"""Integer-only inference in numpy: bit for bit what TFLite's reference kernels compute.

:func:`run` executes a full-integer ``.tflite`` (read through the generated flatbuffer schema,
:mod:`qlib.flatbuffer`) with nothing but integer arithmetic, vectorized over the batch, exactly
as LiteRT's reference kernels (``BUILTIN_REF``) do:

- **Accumulate in int32**: ``acc = sum w * (x - z_x) + bias`` over the taps inside the image
  (a tap outside is skipped, which is the same as padding with the input zero point).
- **Requantize** with a 32-bit fixed-point multiplier. The real multiplier
  ``M = s_x * s_w / s_y`` (one per output channel) is stored as ``M = M0 * 2**(shift - 31)``
  with ``M0`` in ``[2**30, 2**31)`` (:func:`quantize_multiplier`), and
  :func:`multiply_by_quantized_multiplier` computes ``round(acc * M)`` in integers. TFLite has two
  builds of it: gemmlowp's *double rounding* (``SaturatingRoundingDoublingHighMul``, then
  ``RoundingDivideByPOT``; the default) and ``TFLITE_SINGLE_ROUNDING``
  (``(acc * M0 + 2**(30 - shift)) >> (31 - shift)``). :data:`ROUNDING` is the one the installed
  LiteRT uses, found by running both against its kernels (``tests/test_integer.py``).
- Add the output zero point and **clamp** to the fused activation's range (ReLU: from the zero
  point; ReLU6: up to ``round(6 / s_y) + z_y``).

One exception, found by running it: LiteRT's reference FULLY_CONNECTED requantizes in double
precision, ``round(acc * s_x * s_w / s_y)`` (half away from zero), instead of ``M0``/shift.

Ops: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, MEAN, AVERAGE_POOL_2D, PAD, PADV2,
RESHAPE, QUANTIZE, DEQUANTIZE. Any other op raises a ``ValueError`` naming it. Dot products run
as float64 matrix products: every partial sum of int8 x int8 products is an integer far below
``2**53``, so they are exact.

:class:`Model` keeps the parsed and prepared graph (every op's multipliers, shifts and clamps, for
inspection) and returns every intermediate tensor with ``run(x, all_tensors=True)``. An ADD's
int8 output depends only on its two int8 inputs, so its integer arithmetic is evaluated once on all
65,536 input pairs when the model is prepared and looked up at run time (the same integers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import flatbuffer as fb
from .quantizers import round_half_away

__all__ = ["ROUNDING", "KERNELS", "OPS", "quantize_multiplier", "saturating_rounding_doubling_high_mul",
           "rounding_divide_by_pot", "multiply_by_quantized_multiplier", "rounding_cases", "Step", "Model", "run",
           "intermediates", "requantize", "double_rounding_float", "FLOAT_EXACT"]

#: What :class:`Model` can follow: LiteRT's reference kernels, or the default (XNNPACK) kernels' arithmetic.
KERNELS = ("reference", "xnnpack")
#: The requantization rounding of the installed LiteRT's kernels: gemmlowp's double rounding
#: (checked against the reference kernels in tests/test_integer.py).
ROUNDING = "double"
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """``(M0, shift)`` with ``real = M0 * 2**(shift - 31)``, ``M0`` an int32 in ``[2**30, 2**31)``.

    TFLite's ``QuantizeMultiplier``: ``frexp`` splits ``real`` into a fraction in ``[0.5, 1)`` and
    a power of two; the fraction is rounded (half away from zero) to 31 bits. Multipliers below
    ``2**-31`` flush to zero. Works elementwise on arrays (per-channel multipliers).

    Examples
    --------
    >>> m0, shift = quantize_multiplier(0.0037)
    >>> int(m0), int(shift), float(m0) * 2.0 ** (int(shift) - 31)
    (2034096511, -8, 0.0036999999992985977)
    """
    real = np.asarray(real, np.float64)
    if np.any(real < 0) or not np.all(np.isfinite(real)):
        raise ValueError("multipliers must be finite and >= 0 (scales are positive)")
    frac, exp = np.frexp(real)
    q = round_half_away(frac * 2.0 ** 31).astype(np.int64)
    carry = q == 2 ** 31
    q = np.where(carry, q // 2, q)
    exp = np.where(carry, exp + 1, exp).astype(np.int64)
    tiny = exp < -31
    q = np.where(tiny | (real == 0), 0, q)
    exp = np.where(tiny | (real == 0), 0, exp)
    if ROUNDING == "single":  # TFLITE_SINGLE_ROUNDING saturates shifts above 30
        big = exp > 30
        q, exp = np.where(big, 2 ** 31 - 1, q), np.where(big, 30, exp)
    return q, exp


def _wrap32(v):
    """int32 two's-complement wrap-around (what a C++ int32 accumulator does), as int64."""
    return np.asarray(v, np.int64).astype(np.int32).astype(np.int64)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul``: ``round(a * b / 2**31)`` for int32 ``a, b``.

    Rounds to nearest with ties *up* (toward +infinity: the nudge is ``2**30`` for a positive
    product and ``1 - 2**30`` for a negative one, then C's truncating division), so 1.5 -> 2 but
    -1.5 -> -1; ``a = b = -2**31`` saturates to ``2**31 - 1``.

    Examples
    --------
    >>> saturating_rounding_doubling_high_mul(np.array([3, -3, -2**31]), np.array([2**30, 2**30, -2**31])).tolist()
    [2, -1, 2147483647]
    """
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    overflow = (a == b) & (a == INT32_MIN)
    ab = a * b
    num = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = np.where(num >= 0, num >> 31, -((-num) >> 31))  # C++ division truncates toward zero
    return np.where(overflow, INT32_MAX, q)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp's ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded to nearest, ties away from zero.

    Examples
    --------
    >>> rounding_divide_by_pot(np.array([5, -5, 6, -6, 7]), 2).tolist()    # 1.25, -1.25, 1.5, -1.5, 1.75
    [1, -1, 2, -2, 2]
    """
    x, e = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift, rounding: str | None = None) -> np.ndarray:
    """TFLite's ``MultiplyByQuantizedMultiplier``: ``round(x * M0 * 2**(shift - 31))`` for int32 ``x``.

    ``rounding="double"`` (gemmlowp, TFLite's default build): left shift, then
    :func:`saturating_rounding_doubling_high_mul`, then :func:`rounding_divide_by_pot`.
    ``rounding="single"`` (``TFLITE_SINGLE_ROUNDING``): ``(x * M0 + 2**(30 - shift)) >> (31 - shift)``.
    ``None`` uses :data:`ROUNDING`. ``multiplier``/``shift`` broadcast (per channel: last axis).

    Examples
    --------
    >>> m0, s = quantize_multiplier(0.25)
    >>> multiply_by_quantized_multiplier(np.array([6, -6, 10, -10]), m0, s).tolist()   # 1.5, -1.5, 2.5, -2.5
    [2, -2, 3, -3]
    >>> multiply_by_quantized_multiplier(np.array([6, -6, 10, -10]), m0, s, rounding="single").tolist()
    [2, -1, 3, -2]
    """
    rounding = ROUNDING if rounding is None else rounding
    x = np.asarray(x, np.int64)
    m = np.asarray(multiplier, np.int64)
    s = np.asarray(shift, np.int64)
    if rounding == "single":
        total = 31 - s
        return (x * m + (np.int64(1) << (total - 1))) >> total
    if rounding != "double":
        raise ValueError(f"rounding must be 'double' or 'single', got {rounding!r}")
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(_wrap32(x * (np.int64(1) << left)), m), right)


def rounding_cases(acc, multiplier, shift, zero_point: int = 0, lo: int = -128, hi: int = 127) -> dict:
    """Where TFLite's requantization of ``acc`` parts from rounding the exact product once.

    The exact value is ``v = acc * M0 / 2**(31 - shift)`` (a rational; counted in integers).
    Returns counts over all elements: ``n``; ``ties`` (``v`` exactly halfway between two
    integers, outside the clamped range); ``double_rounding`` (the int8 output differs from the
    one ``v`` rounded once, half away from zero, would give); ``clamped_min`` / ``clamped_max``
    (the result plus ``zero_point`` falls below ``lo`` / above ``hi`` and is clamped: a fused
    ReLU's zero, or saturation at ReLU6's 6 or the int8 range).

    Examples
    --------
    >>> m0, shift = quantize_multiplier(0.25)
    >>> rounding_cases(np.array([6, -6, 7, 9, 1000]), m0, shift)   # 1.5, -1.5, 1.75, 2.25, 250
    {'n': 5, 'ties': 2, 'double_rounding': 1, 'clamped_min': 0, 'clamped_max': 1}
    >>> rounding_cases(np.array([6, -6, 7, 9, 1000]), m0, shift, lo=0)  # a ReLU hides the negative tie
    {'n': 5, 'ties': 1, 'double_rounding': 1, 'clamped_min': 1, 'clamped_max': 1}
    >>> int(multiply_by_quantized_multiplier(9, m0, shift))   # 2.25 -> 4.5 -> 5 halves -> 2.5 -> 3
    3
    """
    acc = np.asarray(acc, np.int64)
    m = np.broadcast_to(np.asarray(multiplier, np.int64), acc.shape[-1:] if acc.ndim else ())
    sh = np.broadcast_to(np.asarray(shift, np.int64), acc.shape[-1:] if acc.ndim else ())
    k = 31 - sh
    if np.any(k > 62) or np.any(k < 1):
        raise ValueError("shifts must be in -31..30")
    num = acc * m
    half = np.int64(1) << (k - 1)
    mag = np.abs(num)
    nearest = np.sign(num) * ((mag + half) >> k)
    ties = (mag & ((np.int64(1) << k) - 1)) == half
    double = multiply_by_quantized_multiplier(acc, m, sh, "double")
    out = double + zero_point
    inside = (nearest + zero_point >= lo) & (nearest + zero_point <= hi)
    differ = np.clip(out, lo, hi) != np.clip(nearest + zero_point, lo, hi)
    return {"n": int(acc.size), "ties": int(np.sum(ties & inside)), "double_rounding": int(differ.sum()),
            "clamped_min": int(np.sum(out < lo)), "clamped_max": int(np.sum(out > hi))}


# --- ops ----------------------------------------------------------------------------------------

def _q(t: fb.Tensor):
    if t.scale.size == 0:
        raise ValueError(f"tensor {t.name!r} is not quantized; qlib.integer runs full-integer models")
    return float(t.scale[0]), int(t.zero_point[0])


def _activation_range(activation: int, t: fb.Tensor) -> tuple[int, int]:
    """TFLite's ``CalculateActivationRangeQuantized`` for an int8 output."""
    scale, zp = _q(t)

    def quant(v):
        return zp + int(round_half_away(np.float32(v) / np.float32(scale)))

    lo, hi = -128, 127
    if activation == 1:  # RELU
        return max(lo, quant(0.0)), hi
    if activation == 3:  # RELU6
        return max(lo, quant(0.0)), min(hi, quant(6.0))
    if activation == 2:  # RELU_N1_TO_1
        return max(lo, quant(-1.0)), min(hi, quant(1.0))
    if activation != 0:
        raise ValueError(f"fused activation {activation} (TANH/SIGN_BIT) is not supported by qlib.integer")
    return lo, hi


def _padding(padding: int, in_size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """``(output size, padding before)`` as TFLite computes them (``ComputePaddingHeightWidth``)."""
    eff = (k - 1) * dilation + 1
    out = (in_size + stride - 1) // stride if padding == 0 else (in_size - eff + stride) // stride
    total = max(0, (out - 1) * stride + eff - in_size)
    return out, total // 2


@dataclass(eq=False)
class Step:
    """One prepared op: its name, tensor indices, the integer parameters TFLite's Prepare derives
    (``params``: multipliers, shifts, clamps, paddings...), the function that runs it (``fn``) and,
    for CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED, ``accumulate``: its int32 accumulators
    (``sum w * (x - z_x) + bias``) before requantization."""

    index: int
    op: str
    inputs: list
    outputs: list
    params: dict = field(default_factory=dict)
    fn: object = field(default=None, repr=False)
    accumulate: object = field(default=None, repr=False)

    def __repr__(self) -> str:
        keys = ", ".join(k for k in self.params if not k.startswith("_"))
        return f"Step({self.index}: {self.op}, inputs={self.inputs}, outputs={self.outputs}, params: {keys})"


def _fixed(rounding):
    return "double" if rounding == "xnnpack" else rounding


def double_rounding_float(x: np.ndarray, m_scaled: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Double-rounding requantization in float64, exact for ``|x| < 2**22``.

    ``SaturatingRoundingDoublingHighMul`` is ``floor(x * M0 / 2**31 + 1/2)`` (ties up) and
    ``RoundingDivideByPOT`` rounds half away from zero. With ``|x * M0| < 2**53`` every step is an
    exact float64 operation (products of integers, powers of two, adding 1/2), so this equals
    :func:`multiply_by_quantized_multiplier` (checked exhaustively in the tests) at a quarter of
    the cost. ``m_scaled = M0 * 2**-31``, ``down = 2**shift`` (``shift <= 0``).

    Examples
    --------
    >>> m0, shift = quantize_multiplier(0.0123)
    >>> x = np.arange(-5000, 5000)
    >>> fast = double_rounding_float(x.astype(np.float64), float(m0) * 2.0 ** -31, 2.0 ** float(shift))
    >>> bool(np.array_equal(fast.astype(np.int64), multiply_by_quantized_multiplier(x, m0, shift)))
    True
    """
    u = x * m_scaled
    np.floor(u + 0.5, out=u)
    u *= down
    u += np.copysign(0.5, u)
    return np.trunc(u, out=u)


#: Accumulators below this magnitude take the float64 path of :func:`double_rounding_float`.
FLOAT_EXACT = 2 ** 22


def requantize(acc, multiplier, shift, rounding, bias=None, zero_point: int = 0, lo: int = -128, hi: int = 127,
                block: int = 1 << 15) -> np.ndarray:
    """int8 ``clamp(MultiplyByQuantizedMultiplier(acc + bias) + zero_point, lo, hi)``, per channel on
    the last axis. ``acc`` may be a float array of exact integers (from the float matrix products).

    Runs in cache-sized blocks. The common case (double rounding, right shifts, positive ``M0``,
    accumulators below ``2**22``) takes an exact float64 path; anything else the integer one.

    Examples
    --------
    >>> m0, shift = quantize_multiplier(0.01)
    >>> requantize(np.array([[-20000, 0, 1234, 50000]]), m0, shift, "double", zero_point=-3)
    array([[-128,   -3,    9,  127]], dtype=int8)
    """
    rounding = _fixed(rounding)
    acc = np.asarray(acc)
    channels = acc.shape[-1] if acc.ndim else 1
    m = np.broadcast_to(np.asarray(multiplier, np.int64), (channels,))
    shift = np.broadcast_to(np.asarray(shift, np.int64), (channels,))
    fast = rounding == "double" and not np.any(shift > 0) and np.all(m > 0)
    m_scaled = m.astype(np.float64) * 2.0 ** -31
    down = 2.0 ** np.minimum(shift, 0).astype(np.float64)
    flat = acc.reshape(-1, channels)
    out = np.empty(flat.shape, np.int8)
    rows = max(1, block // channels)
    for i in range(0, flat.shape[0], rows):
        x = flat[i:i + rows].astype(np.float64)
        if bias is not None:
            x += bias
        if fast and np.all(np.abs(x) < FLOAT_EXACT):
            r = double_rounding_float(x, m_scaled, down)
        else:
            xi = x.astype(np.int64).astype(np.int32).astype(np.int64)  # an int32 accumulator wraps around
            r = multiply_by_quantized_multiplier(xi, m, shift, rounding).astype(np.float64)
        r += zero_point
        np.clip(r, lo, hi, out=r)
        out[i:i + rows] = r
    return out.reshape(acc.shape)


def _accumulator(products, bias) -> np.ndarray:
    """The int32 accumulator ``sum w * (x - z_x) + bias`` (wrapping like C++ int32), as int64."""
    acc = np.asarray(products).astype(np.int64)
    return _wrap32(acc if bias is None else acc + bias)


def _requant(acc, p, t_out, lo, hi, rounding):
    if rounding == "xnnpack":
        return _requantize_float32(acc, p["xnnpack_scale"], p["bias"], _q(t_out)[1], lo, hi)
    return requantize(acc, p["multiplier"], p["shift"], rounding, p["bias"], _q(t_out)[1], lo, hi)


def _requantize_float32(acc, scale, bias=None, zero_point: int = 0, lo: int = -128, hi: int = 127,
                        block: int = 1 << 15) -> np.ndarray:
    """XNNPACK's requantization: ``float32(acc) * float32 scale``, clamped, rounded half to even."""
    acc = np.asarray(acc)
    channels = acc.shape[-1] if acc.ndim else 1
    scale = np.broadcast_to(np.asarray(scale, np.float32), (channels,))
    flat = acc.reshape(-1, channels)
    out = np.empty(flat.shape, np.int8)
    rows = max(1, block // channels)
    for i in range(0, flat.shape[0], rows):
        x = flat[i:i + rows].astype(np.int64)
        if bias is not None:
            x += bias
        v = x.astype(np.int32).astype(np.float32) * scale
        np.clip(v, np.float32(lo - zero_point), np.float32(hi - zero_point), out=v)
        out[i:i + rows] = np.rint(v) + zero_point
    return out.reshape(acc.shape)


def _conv_params(g, op, per_channel_dim_size):
    x, w, y = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    s_x, z_x = _q(x)
    s_y, _ = _q(y)
    if x.dtype != np.int8 or w.dtype != np.int8 or y.dtype != np.int8:
        raise ValueError(f"op {op.index} ({op.name}): qlib.integer runs int8 activations and weights, got "
                         f"{np.dtype(x.dtype).name}/{np.dtype(w.dtype).name}/{np.dtype(y.dtype).name}")
    if w.data is None:
        raise ValueError(f"op {op.index} ({op.name}): its weights {w.name!r} are not a constant")
    s_w = np.broadcast_to(w.scale.astype(np.float64), (per_channel_dim_size,))
    # PopulateConvolutionQuantizationParams: double(s_x) * double(s_w) / double(s_y)
    m0, shift = quantize_multiplier(np.float64(np.float32(s_x)) * s_w / np.float64(np.float32(s_y)))
    bias = None
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = g.tensors[op.inputs[2]].data.astype(np.int64)
    xnn = (np.float32(s_x) * s_w.astype(np.float32)) / np.float32(s_y)  # XNNPACK: all in float32
    return dict(input_zero_point=z_x, real_multiplier=np.float64(np.float32(s_x)) * s_w / np.float64(np.float32(s_y)),
                multiplier=m0, shift=shift, xnnpack_scale=xnn, bias=bias, weights=w.data.astype(np.int64),
                weight_zero_point=int(w.zero_point[0]) if w.zero_point.size else 0)


def _shifted_input(x, zp, pad_top, pad_left, need_h, need_w, dtype=np.int32):
    """``x - zp``, zero padded: taps outside the image contribute nothing."""
    xs = x.astype(dtype) - dtype(zp)
    n, h, w, c = xs.shape
    bottom, right = max(0, need_h - h - pad_top), max(0, need_w - w - pad_left)
    if pad_top or pad_left or bottom or right:
        xs = np.pad(xs, ((0, 0), (pad_top, bottom), (pad_left, right), (0, 0)))
    return xs


def _prepare_conv(g, op, rounding):
    o = op.options
    w = g.tensors[op.inputs[1]]
    out_c, kh, kw, in_c = w.shape
    if g.tensors[op.inputs[0]].shape[-1] != in_c:
        raise ValueError(f"op {op.index} (CONV_2D): grouped convolutions are not supported by qlib.integer")
    p = _conv_params(g, op, out_c)
    lo, hi = _activation_range(o.fusedActivationFunction, g.tensors[op.outputs[0]])
    p.update(stride=(o.strideH, o.strideW), dilation=(o.dilationHFactor, o.dilationWFactor),
             padding="SAME" if o.padding == 0 else "VALID", activation_min=lo, activation_max=hi)
    # float32 products and sums are exact while every partial sum stays below 2**24
    exact32 = float(np.abs(p["weights"]).sum(axis=(1, 2, 3)).max()) * 255 < 2 ** 24
    ftype = np.float32 if exact32 else np.float64
    # one (I, O) matrix per tap, contiguous for BLAS
    taps = [[np.ascontiguousarray(p["weights"][:, i, j, :].T.astype(ftype)) for j in range(kw)] for i in range(kh)]

    def products(x):  # sum of w * (x - z_x) over the taps inside the image, without the bias
        n, h, wd, _ = x.shape
        (sh, sw), (dh, dw) = p["stride"], p["dilation"]
        ho, pt = _padding(o.padding, h, kh, sh, dh)
        wo, pl = _padding(o.padding, wd, kw, sw, dw)
        xs = _shifted_input(x, p["input_zero_point"], pt, pl, (ho - 1) * sh + (kh - 1) * dh + 1,
                            (wo - 1) * sw + (kw - 1) * dw + 1, ftype)
        acc = None
        for i in range(kh):
            for j in range(kw):
                tap = xs[:, i * dh: i * dh + (ho - 1) * sh + 1: sh, j * dw: j * dw + (wo - 1) * sw + 1: sw, :]
                part = np.ascontiguousarray(tap).reshape(-1, in_c) @ taps[i][j]  # one matrix product, not n*ho
                acc = part if acc is None else acc.__iadd__(part)
        return acc.reshape(n, ho, wo, out_c)

    return p, lambda x: _requant(products(x), p, g.tensors[op.outputs[0]], lo, hi, rounding), \
        lambda x: _accumulator(products(x), p["bias"])


def _prepare_depthwise(g, op, rounding):
    o = op.options
    w = g.tensors[op.inputs[1]]
    _, kh, kw, out_c = w.shape
    in_c = g.tensors[op.inputs[0]].shape[-1]
    mult = out_c // in_c
    p = _conv_params(g, op, out_c)
    lo, hi = _activation_range(o.fusedActivationFunction, g.tensors[op.outputs[0]])
    p.update(stride=(o.strideH, o.strideW), dilation=(o.dilationHFactor, o.dilationWFactor), depth_multiplier=mult,
             padding="SAME" if o.padding == 0 else "VALID", activation_min=lo, activation_max=hi)
    wi = p["weights"][0].astype(np.int32)  # (kh, kw, C*M)

    def products(x):
        n, h, wd, _ = x.shape
        (sh, sw), (dh, dw) = p["stride"], p["dilation"]
        ho, pt = _padding(o.padding, h, kh, sh, dh)
        wo, pl = _padding(o.padding, wd, kw, sw, dw)
        xs = _shifted_input(x, p["input_zero_point"], pt, pl, (ho - 1) * sh + (kh - 1) * dh + 1,
                            (wo - 1) * sw + (kw - 1) * dw + 1)
        if mult > 1:  # output channel c * M + m reads input channel c
            xs = np.repeat(xs, mult, axis=-1)
        acc = np.zeros((n, ho, wo, out_c), np.int32)
        for i in range(kh):
            for j in range(kw):
                tap = xs[:, i * dh: i * dh + (ho - 1) * sh + 1: sh, j * dw: j * dw + (wo - 1) * sw + 1: sw, :]
                acc += tap * wi[i, j]
        return acc

    return p, lambda x: _requant(products(x), p, g.tensors[op.outputs[0]], lo, hi, rounding), \
        lambda x: _accumulator(products(x), p["bias"])


def _prepare_fully_connected(g, op, rounding):
    """LiteRT's reference FULLY_CONNECTED requantizes in double precision, not with ``M0``/shift:
    ``round(double(acc) * (double(s_x) * double(s_w) / double(s_y)))`` ("to avoid loss of
    precision", per tensor and per channel alike). ``params`` also keeps the fixed-point
    ``multiplier``/``shift`` the optimized kernels use."""
    o = op.options
    w, y = g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    out_c, in_c = w.shape
    p = _conv_params(g, op, out_c)
    per_channel = w.scale.size > 1
    real = p["real_multiplier"]  # double(s_x) * double(s_w) / double(s_y), per output channel
    lo, hi = _activation_range(o.fusedActivationFunction, y)
    p.update(per_channel=per_channel, activation_min=lo, activation_max=hi, requantization="double precision",
             keep_num_dims=bool(getattr(o, "keepNumDims", False)))
    w_int = p["weights"] - (0 if per_channel else p["weight_zero_point"])
    exact32 = float(np.abs(w_int).sum(axis=1).max()) * 255 < 2 ** 24
    ftype = np.float32 if exact32 else np.float64
    wf = w_int.astype(ftype)
    z_y = _q(y)[1]

    def products(x_):
        xs = (x_.astype(np.int64) - p["input_zero_point"]).reshape(-1, in_c).astype(ftype)
        return (xs @ wf.T).astype(np.int64)

    def fn(x_):
        acc = products(x_)
        if rounding == "xnnpack":
            out = _requantize_float32(acc, p["xnnpack_scale"], p["bias"], z_y, lo, hi)
            return out.reshape(x_.shape[:-1] + (out_c,)) if p["keep_num_dims"] else out
        if p["bias"] is not None:
            acc += p["bias"]
        scaled = round_half_away(_wrap32(acc).astype(np.float64) * real).astype(np.int64) + z_y
        out = np.clip(scaled, lo, hi).astype(np.int8)
        return out.reshape(x_.shape[:-1] + (out_c,)) if p["keep_num_dims"] else out

    return p, fn, lambda x_: _accumulator(products(x_), p["bias"])


def _prepare_add(g, op, rounding):
    a, b, y = (g.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    if not a.dtype == b.dtype == y.dtype == np.int8:
        raise ValueError(f"op {op.index} (ADD): qlib.integer adds int8 tensors, got "
                         f"{np.dtype(a.dtype).name} + {np.dtype(b.dtype).name} -> {np.dtype(y.dtype).name}")
    (s_a, z_a), (s_b, z_b), (s_y, z_y) = _q(a), _q(b), _q(y)
    left = 20
    twice = 2.0 * float(max(np.float32(s_a), np.float32(s_b)))  # float max, then double
    m_a, sh_a = quantize_multiplier(np.float64(np.float32(s_a)) / twice)
    m_b, sh_b = quantize_multiplier(np.float64(np.float32(s_b)) / twice)
    m_y, sh_y = quantize_multiplier(twice / np.float64(np.float32(np.float32(1 << left) * np.float32(s_y))))
    lo, hi = _activation_range(op.options.fusedActivationFunction if op.options is not None else 0, y)
    p = dict(left_shift=left, input_zero_points=(z_a, z_b), output_zero_point=z_y,
             multipliers=(int(m_a), int(m_b), int(m_y)), shifts=(int(sh_a), int(sh_b), int(sh_y)),
             activation_min=lo, activation_max=hi)

    if rounding == "xnnpack":  # XNNPACK: 20-bit integer multipliers from float32 scale ratios, one shift
        ra, rb = np.float32(s_a) / np.float32(s_y), np.float32(s_b) / np.float32(s_y)
        exponent = int(np.float32(max(abs(ra), abs(rb))).view(np.uint32) >> 23) - 127
        x_shift = 20 - exponent
        am, bm = (int(np.rint(r * np.float32(2.0 ** x_shift))) for r in (ra, rb))
        x_bias = -(am * z_a + bm * z_b) + (1 << (x_shift - 1))
        p.update(xnnpack_multipliers=(am, bm), xnnpack_shift=x_shift)

        def arithmetic(xa, xb):
            acc = x_bias + xa.astype(np.int64) * am + xb.astype(np.int64) * bm
            return np.clip((acc >> x_shift) + z_y, lo, hi).astype(np.int8)

        return p, _pairwise_table(arithmetic)

    def arithmetic(xa, xb):
        va = (xa.astype(np.int64) - z_a) * (1 << left)
        vb = (xb.astype(np.int64) - z_b) * (1 << left)
        sa = multiply_by_quantized_multiplier(va, m_a, sh_a, rounding)
        sb = multiply_by_quantized_multiplier(vb, m_b, sh_b, rounding)
        return requantize(sa + sb, m_y, sh_y, rounding, None, z_y, lo, hi)

    return p, _pairwise_table(arithmetic)


def _pairwise_table(arithmetic):
    """An int8 x int8 -> int8 op as a lookup: ``arithmetic`` evaluated once on all 65,536 input
    pairs, then every call is a gather (the same integers, much faster on big tensors)."""
    v = np.arange(-128, 128)
    table = arithmetic(np.repeat(v, 256).astype(np.int8), np.tile(v, 256).astype(np.int8))

    def fn(xa, xb):
        xa, xb = np.broadcast_arrays(xa, xb)
        return table[(xa.astype(np.intp) + 128) * 256 + (xb.astype(np.intp) + 128)]

    fn.arithmetic = arithmetic
    return fn


def _prepare_mean(g, op, rounding):
    x, axes_t, y = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    if axes_t.data is None:
        raise ValueError(f"op {op.index} (MEAN): its axes are not a constant")
    (s_x, z_x), (s_y, z_y) = _q(x), _q(y)
    keep = bool(getattr(op.options, "keepDims", False))
    m0, shift = quantize_multiplier(np.float64(np.float32(s_x)) / np.float64(np.float32(s_y)))
    axes = tuple(sorted({int(a) % len(x.shape) for a in np.ravel(axes_t.data)}))
    p = dict(axes=axes, keep_dims=keep, input_zero_point=z_x, output_zero_point=z_y, multiplier=int(m0),
             shift=int(shift))

    def fn(x_):
        n = int(np.prod([x_.shape[a] for a in axes]))
        total = x_.astype(np.int64).sum(axis=axes, keepdims=keep)
        if rounding == "xnnpack":  # XNNPACK: the sum times float32 s_x / (s_y * n), rounded half to even
            scale = np.float32(s_x) / (np.float32(s_y) * np.float32(n))
            return _requantize_float32(total - z_x * n, scale, None, z_y)
        # QuantizedMeanOrSum folds 1/n into the multiplier
        sh = min(n.bit_length() - 1, 32, 31 + int(shift))
        mult = (int(m0) << sh) // n
        return requantize(total - z_x * n, mult, int(shift) - sh, rounding, None, z_y)

    return p, fn


def _prepare_average_pool(g, op, rounding):
    o = op.options
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if _q(x) != _q(y):
        raise ValueError(f"op {op.index} (AVERAGE_POOL_2D): input and output grids differ, TFLite requires them equal")
    lo, hi = _activation_range(o.fusedActivationFunction, y)
    kh, kw, sh, sw = o.filterHeight, o.filterWidth, o.strideH, o.strideW
    p = dict(filter=(kh, kw), stride=(sh, sw), padding="SAME" if o.padding == 0 else "VALID", activation_min=lo,
             activation_max=hi)

    def fn(x_):
        n, h, wd, c = x_.shape
        ho, pt = _padding(o.padding, h, kh, sh, 1)
        wo, pl = _padding(o.padding, wd, kw, sw, 1)
        size_h, size_w = max((ho - 1) * sh + kh, pt + h), max((wo - 1) * sw + kw, pl + wd)
        xs = np.zeros((n, size_h, size_w, c), np.int64)
        cnt = np.zeros((1, size_h, size_w, 1), np.int64)
        xs[:, pt:pt + h, pl:pl + wd] = x_
        cnt[:, pt:pt + h, pl:pl + wd] = 1
        acc = np.zeros((n, ho, wo, c), np.int64)
        count = np.zeros((1, ho, wo, 1), np.int64)
        for i in range(kh):
            for j in range(kw):
                acc += xs[:, i: i + (ho - 1) * sh + 1: sh, j: j + (wo - 1) * sw + 1: sw]
                count += cnt[:, i: i + (ho - 1) * sh + 1: sh, j: j + (wo - 1) * sw + 1: sw]
        half = count // 2
        num = np.where(acc > 0, acc + half, acc - half)
        out = np.where(num >= 0, num // count, -((-num) // count))  # C++ division truncates toward zero
        return np.clip(out, lo, hi).astype(np.int8)

    return p, fn


def _prepare_pad(g, op, rounding):
    x, pads_t, y = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    if pads_t.data is None:
        raise ValueError(f"op {op.index} ({op.name}): its paddings are not a constant")
    if x.dtype == np.int8 and _q(x) != _q(y):
        raise ValueError(f"op {op.index} ({op.name}): input and output grids differ")
    value = _q(y)[1] if y.dtype == np.int8 else 0
    if op.name == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        value = int(np.ravel(g.tensors[op.inputs[2]].data)[0])
    pads = [tuple(int(v) for v in row) for row in np.asarray(pads_t.data).reshape(-1, 2)]
    return dict(paddings=pads, value=value), lambda x_: np.pad(x_, pads, constant_values=value)


def _prepare_reshape(g, op, rounding):
    y = g.tensors[op.outputs[0]]
    shape = None
    if len(op.inputs) > 1 and op.inputs[1] >= 0 and g.tensors[op.inputs[1]].data is not None:
        shape = [int(v) for v in np.ravel(g.tensors[op.inputs[1]].data)]
    elif op.options is not None and getattr(op.options, "newShape", None) is not None:
        shape = [int(v) for v in op.options.newShape]
    if shape is None:
        shape = list(y.shape)

    def fn(x_):
        s = list(shape)
        if -1 not in s and int(np.prod(s)) != x_.size and s:
            s[0] = -1  # a batch-1 shape, run on a batch
        return x_.reshape(s)

    return dict(new_shape=shape), fn


def _prepare_quantize(g, op, rounding):
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    s_y, z_y = _q(y)
    if y.dtype != np.int8:
        raise ValueError(f"op {op.index} (QUANTIZE): output type {np.dtype(y.dtype).name} is not supported (int8 is)")
    if x.dtype == np.float32:  # AffineQuantize: float32 division, TfLiteRound
        def fn(x_):
            q = round_half_away(x_.astype(np.float32) / np.float32(s_y)).astype(np.int64) + z_y
            return np.clip(q, -128, 127).astype(np.int8)

        return dict(scale=s_y, zero_point=z_y), fn
    if x.dtype != np.int8:
        raise ValueError(f"op {op.index} (QUANTIZE): input type {np.dtype(x.dtype).name} is not supported")
    s_x, z_x = _q(x)
    m0, shift = quantize_multiplier(np.float64(np.float32(s_x)) / np.float64(np.float32(s_y)))

    def requantize(x_):
        out = multiply_by_quantized_multiplier(x_.astype(np.int64) - z_x, m0, shift, _fixed(rounding)) + z_y
        return np.clip(out, -128, 127).astype(np.int8)

    return dict(multiplier=int(m0), shift=int(shift), input_zero_point=z_x, output_zero_point=z_y), requantize


def _prepare_dequantize(g, op, rounding):
    x = g.tensors[op.inputs[0]]
    s, z = _q(x)
    return dict(scale=s, zero_point=z), \
        lambda x_: (np.float64(np.float32(s)) * (x_.astype(np.int64) - z)).astype(np.float32)


#: The ops qlib.integer runs, by TFLite builtin name.
OPS = {"CONV_2D": _prepare_conv, "DEPTHWISE_CONV_2D": _prepare_depthwise, "FULLY_CONNECTED": _prepare_fully_connected,
       "ADD": _prepare_add, "MEAN": _prepare_mean, "AVERAGE_POOL_2D": _prepare_average_pool, "PAD": _prepare_pad,
       "PADV2": _prepare_pad, "RESHAPE": _prepare_reshape, "QUANTIZE": _prepare_quantize,
       "DEQUANTIZE": _prepare_dequantize}


class Model:
    """A ``.tflite`` parsed and prepared for integer-only execution in numpy.

    Preparing computes what TFLite's ``Prepare`` does for every op: per-channel ``M0`` and shift,
    activation clamps, paddings. ``steps`` holds them, one :class:`Step` per op.

    Parameters
    ----------
    tflite_model : bytes
        A full-integer model (int8 activations, int8 weights, int32 biases).
    rounding : {"double", "single"}, optional
        Requantization rounding (default :data:`ROUNDING`, the installed runtime's).
    kernels : {"reference", "xnnpack"}
        ``"reference"``: LiteRT's reference kernels, bit for bit. ``"xnnpack"``: the arithmetic
        of the default kernels (the XNNPACK delegate), as measured against them: convolutions,
        depthwise and fully connected layers requantize in float32
        (``float32(acc) * float32(s_x * s_w / s_y)``, rounded half to even), MEAN likewise, ADD
        with 20-bit integer multipliers and one rounding shift.

    Examples
    --------
    >>> import keras
    >>> from qlib.tflite import convert_int8, quantize_input
    >>> inp = keras.Input((6, 6, 2))
    >>> m = keras.Model(inp, keras.layers.Conv2D(3, 3, activation="relu", name="c")(inp))
    >>> x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype("float32")
    >>> model = Model(convert_int8(m, x))
    >>> model
    Model(2 inputs/outputs, 1 ops: CONV_2D x1; rounding='double')
    >>> model.steps[0].params["shift"].shape             # one per output channel
    (3,)
    >>> model.run(quantize_input(model.tflite, x)).dtype.name
    'int8'
    """

    def __init__(self, tflite_model: bytes, rounding: str | None = None, kernels: str = "reference"):
        self.rounding = ROUNDING if rounding is None else rounding
        if self.rounding not in ("double", "single"):
            raise ValueError(f"rounding must be 'double' or 'single', got {self.rounding!r}")
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
        self.kernels = kernels
        self.tflite = fb._check_bytes(tflite_model)
        self.graph = fb.graph(self.tflite)
        unknown = [op for op in self.graph.ops if op.name not in OPS]
        if unknown:
            op = unknown[0]
            raise ValueError(f"op {op.index} of the model is {op.name}, which qlib.integer does not implement; it runs "
                             f"{', '.join(sorted(OPS))}")
        self.steps = []
        for op in self.graph.ops:
            prepared = OPS[op.name](self.graph, op, "xnnpack" if kernels == "xnnpack" else self.rounding)
            self.steps.append(Step(op.index, op.name, list(op.inputs), list(op.outputs), *prepared))

    def __repr__(self) -> str:
        kinds = {}
        for s in self.steps:
            kinds[s.op] = kinds.get(s.op, 0) + 1
        ops = ", ".join(f"{k} x{v}" for k, v in kinds.items())
        return (f"Model({len(self.graph.inputs) + len(self.graph.outputs)} inputs/outputs, {len(self.steps)} ops: "
                f"{ops}; " + (f"rounding={self.rounding!r})" if self.kernels == "reference" else "kernels='xnnpack')"))

    def _check_input(self, x) -> np.ndarray:
        t = self.graph.tensors[self.graph.inputs[0]]
        x = np.asarray(x)
        if x.dtype != t.dtype:
            raise TypeError(f"x has dtype {x.dtype}, the model's input {t.name!r} is {np.dtype(t.dtype).name}; "
                            "quantize float inputs with qlib.tflite.quantize_input(tflite_model, x)")
        if x.ndim != len(t.shape) or tuple(x.shape[1:]) != tuple(t.shape[1:]) or x.shape[0] == 0:
            raise ValueError(f"x must be a non-empty batch of shape (N, {', '.join(map(str, t.shape[1:]))}), "
                             f"got {x.shape}")
        return x

    def run(self, x, all_tensors: bool = False, batch_size: int | None = 256):
        """The output tensor for input batch ``x`` (same dtype as the model's input, e.g. int8).

        With ``all_tensors=True``: ``{tensor index: array}`` for the input and every op output
        (like LiteRT's ``experimental_preserve_all_tensors``). ``batch_size`` bounds memory.
        """
        x = self._check_input(x)
        if batch_size is None or x.shape[0] <= batch_size:
            return self._run(x, all_tensors)
        parts = [self._run(x[i:i + batch_size], all_tensors) for i in range(0, x.shape[0], batch_size)]
        if all_tensors:
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return np.concatenate(parts)

    def _run(self, x, all_tensors):
        values = {self.graph.inputs[0]: x}
        for step in self.steps:
            args = [values[i] for i in step.inputs if i >= 0 and self.graph.tensors[i].data is None]
            values[step.outputs[0]] = step.fn(*args)
        return values if all_tensors else values[self.graph.outputs[0]]


def run(tflite_model: bytes, x, batch_size: int | None = 256, kernels: str = "reference") -> np.ndarray:
    """Integer-only inference: the output tensor (int8 for int8 input) of a ``.tflite`` on ``x``.

    Bit for bit LiteRT's reference kernels (see the module docstring); ``kernels="xnnpack"``
    follows the default kernels' arithmetic instead (see :class:`Model`).

    Examples
    --------
    >>> import keras
    >>> from qlib.tflite import convert_int8, invoke, quantize_input
    >>> inp = keras.Input((8, 8, 3))
    >>> h = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(inp)
    >>> m = keras.Model(inp, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(h)))
    >>> x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    >>> tfl = convert_int8(m, x)
    >>> xq = quantize_input(tfl, x)
    >>> bool(np.array_equal(run(tfl, xq), invoke(tfl, xq, kernels="reference")))
    True
    """
    return Model(tflite_model, kernels=kernels).run(x, batch_size=batch_size)


def intermediates(tflite_model: bytes, x, batch_size: int | None = 256, kernels: str = "reference") -> dict:
    """Every tensor qlib.integer computes on ``x``: ``{tensor index: array}`` (input, each op's output).

    Compare with ``qlib.tflite.invoke(tflite_model, x, kernels="reference", all_tensors=True)``.

    Examples
    --------
    >>> import keras
    >>> from qlib.tflite import convert_int8, quantize_input
    >>> inp = keras.Input((4,))
    >>> m = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Dense(3, activation="relu")(inp)))
    >>> x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    >>> tfl = convert_int8(m, x)
    >>> {k: v.shape for k, v in intermediates(tfl, quantize_input(tfl, x)).items()}
    {0: (5, 4), 3: (5, 3), 4: (5, 2)}
    """
    return Model(tflite_model, kernels=kernels).run(x, all_tensors=True, batch_size=batch_size)

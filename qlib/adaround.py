"""AdaRound: learn, layer by layer, whether each weight rounds up or down (Nagel et al., ICML 2020).

Rounding every weight to its nearest grid level minimises each weight's own error, not the
error of the layer's output. AdaRound keeps the grid (the scale TFLite stores) and learns only
the rounding direction. For a weight ``w`` with step ``s`` the candidates are ``floor(w/s)`` and
``floor(w/s) + 1``; a continuous variable ``V`` picks between them through the rectified sigmoid::

    h(V) = clip(sigmoid(V) * (ZETA - GAMMA) + GAMMA, 0, 1)            # ZETA = 1.1, GAMMA = -0.1
    W~   = s * clip(floor(W/s) + h(V), qmin, qmax)                     # the soft-quantized kernel

and ``V`` minimises, on calibration data, the layer's output error plus a regulariser that
pushes every ``h`` to 0 or 1 (its exponent ``beta`` is annealed from 20 to 2 after a 20% warm-up)::

    || f(W~ x_q + b_q) - f(W x + b) ||^2  +  reg * sum(1 - |2 h(V) - 1|^beta)

``x`` and ``f(W x + b)`` are the layer's input and output in the float model; ``x_q`` its input in
the model whose earlier layers are already quantized and rounded (so each layer also corrects
what came before it); ``f`` the activation TFLite fuses into the layer (ReLU, ReLU6 or none). At
the end every weight is frozen to ``floor(w/s)`` or ``floor(w/s) + 1`` (``h(V) > 1/2``), clipped
to the grid. Weights exactly on a level (``w/s`` an integer, e.g. zeros) keep it.

Here it is plain numpy with hand-written gradients (the layer is written as a matrix product over
sampled output positions: im2col), so it runs the same on every Keras backend.
:func:`optimize_rounding` is the per-layer problem; :func:`adaround` walks a whole model through
:class:`qlib.simulate.Simulator` and returns what :func:`qlib.simulate.quantize_model` returns (a
Keras model with FakeQuant activations, kernels on qlib's grid and int32-grid biases), with an
:class:`AdaRoundReport` on its ``adaround_report`` attribute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import keras
import numpy as np
from threadpoolctl import threadpool_limits

from ._checks import check_batch, check_num_bits
from .graph import as_functional, consumers
from .layers import WEIGHTED, inline_activation, is_relu, is_relu6, kind, quantize_kernel
from .quantizers import integer_range, round_half_away
from .ranges import minmax
from .simulate import Simulator

__all__ = ["LayerInputs", "ZETA", "GAMMA", "calibration_subset", "rectified_sigmoid", "init_logits", "rounding_regularizer", "beta_schedule",
           "RoundingResult", "optimize_rounding", "LayerReport", "AdaRoundReport", "adaround"]

#: Stretch of the rectified sigmoid (Louizos et al. 2018): h reaches exactly 0 and 1.
ZETA, GAMMA = 1.1, -0.1
ACTIVATIONS = ("linear", "relu", "relu6")


def calibration_subset(x, n: int = 1024, seed: int = 0) -> np.ndarray:
    """A fixed, seeded subset of ``n`` samples of ``x`` (in their original order): AdaRound's calibration set.

    Examples
    --------
    >>> calibration_subset(np.arange(10), n=4).tolist()
    [2, 4, 6, 7]
    """
    x = np.asarray(x)
    n = _check_int(n, "n", 1)
    if n > x.shape[0]:
        raise ValueError(f"n={n} is more than the {x.shape[0]} samples available")
    return x[np.sort(np.random.default_rng(seed).permutation(x.shape[0])[:n])]


def _sigmoid(v):
    return 0.5 * (1.0 + np.tanh(0.5 * v))  # no overflow warnings for large |v|


def rectified_sigmoid(v) -> np.ndarray:
    """``h(V) = clip(sigmoid(V) (ZETA - GAMMA) + GAMMA, 0, 1)``: the soft rounding, exactly 0 or 1 in its tails.

    Examples
    --------
    >>> np.round(rectified_sigmoid(np.array([-10.0, 0.0, 10.0])), 6).tolist()
    [0.0, 0.5, 1.0]
    """
    return np.clip(_sigmoid(np.asarray(v)) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def init_logits(rest) -> np.ndarray:
    """The ``V`` with ``h(V) = rest`` (``rest = w/s - floor(w/s)`` in [0, 1)): AdaRound starts at the float weight.

    Examples
    --------
    >>> v = init_logits(np.array([0.0, 0.25, 0.5, 0.9]))
    >>> np.round(rectified_sigmoid(v), 6).tolist()
    [0.0, 0.25, 0.5, 0.9]
    """
    rest = np.asarray(rest, np.float64)
    if np.any((rest < 0) | (rest >= 1)):
        raise ValueError("rest must be in [0, 1): the fractional part w/s - floor(w/s)")
    return -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)


def rounding_regularizer(h, beta: float) -> float:
    """``sum(1 - |2h - 1|^beta)``: zero when every ``h`` is 0 or 1, largest at ``h = 1/2``.

    A large ``beta`` leaves ``h`` free except near 1/2; a small one pulls every ``h`` to 0 or 1.

    Examples
    --------
    >>> rounding_regularizer(np.array([0.0, 1.0, 0.5]), beta=2.0)
    1.0
    >>> round(rounding_regularizer(np.array([0.3]), beta=20.0), 6)
    1.0
    """
    h = np.asarray(h, np.float64)
    return float(np.sum(1.0 - np.abs(2.0 * h - 1.0) ** beta))


def beta_schedule(iteration: int, iterations: int, warmup: float = 0.2, beta_range=(20.0, 2.0)):
    """The regulariser's exponent at ``iteration``: ``None`` (no regulariser) during the warm-up,
    then decaying linearly from ``beta_range[0]`` to ``beta_range[1]``.

    Examples
    --------
    >>> [beta_schedule(i, 10) for i in (0, 1, 2, 6, 10)]
    [None, None, 20.0, 11.0, 2.0]
    """
    start = int(warmup * iterations)
    if iteration < start:
        return None
    t = (iteration - start) / max(iterations - start, 1)
    return float(beta_range[1] + (beta_range[0] - beta_range[1]) * max(0.0, 1.0 - t))


def _activate(y, activation):
    if activation == "relu":
        return np.maximum(y, 0.0), y > 0
    if activation == "relu6":
        return np.clip(y, 0.0, 6.0), (y > 0) & (y < 6)
    return y, None


class _Form:
    """The layer as a product of its input rows and a kernel.

    A matrix kernel ``(K, O)`` takes rows ``(R, K)``: ``y = x @ w``. A depthwise kernel ``(K, C, M)``
    is one small product per channel; its rows ``(R, K, C)`` are kept channel-major ``(C, R, K)`` so
    that every product is one batched matrix product.
    """

    def __init__(self, x, kernel_shape, depthwise):
        self.depthwise = depthwise
        self.shape = tuple(kernel_shape)
        self.rows = x.shape[0]
        self.x = np.ascontiguousarray(np.transpose(x, (2, 0, 1))) if depthwise else x

    def forward(self, w, idx=slice(None)):
        if not self.depthwise:
            return self.x[idx] @ w
        xb = self.x[:, idx, :]                                              # (C, B, K)
        y = np.matmul(xb, np.transpose(w, (1, 0, 2)))                       # (C, B, M)
        return np.transpose(y, (1, 0, 2)).reshape(xb.shape[1], -1)          # (B, C*M), output c*M + m

    def grad(self, g, idx=slice(None)):
        """The gradient of ``sum(forward(w) * g)`` with respect to ``w``."""
        if not self.depthwise:
            return self.x[idx].T @ g
        c, m = self.shape[1], self.shape[2]
        xb = self.x[:, idx, :]
        gc = np.transpose(g.reshape(-1, c, m), (1, 0, 2))                   # (C, B, M)
        return np.transpose(np.matmul(np.transpose(xb, (0, 2, 1)), gc), (1, 0, 2))

    def gram(self, t):
        """``(H, C)`` of the quadratic ``mean_r ||x_r w - t_r||^2 = <w, H w> - 2 <w, C> + const`` (float64)."""
        n = self.rows
        x = self.x.astype(np.float64)
        t = np.asarray(t, np.float64)
        if not self.depthwise:
            return (x.T @ x) / n, (x.T @ t) / n
        c, m = self.shape[1], self.shape[2]
        xt = np.transpose(x, (0, 2, 1))                                     # (C, K, R)
        cross = np.matmul(xt, np.transpose(t.reshape(n, c, m), (1, 0, 2)))  # (C, K, M)
        return np.matmul(xt, x) / n, np.transpose(cross, (1, 0, 2)) / n

    def gram_grad(self, h, w):
        """``H w`` (the gradient of ``<w, H w>`` is ``2 H w``)."""
        if not self.depthwise:
            return h @ w
        return np.transpose(np.matmul(h, np.transpose(w, (1, 0, 2))), (1, 0, 2))


@dataclass(repr=False)
class RoundingResult:
    """What :func:`optimize_rounding` learned for one layer.

    Attributes
    ----------
    integers, nearest : numpy.ndarray
        The learned and the nearest-rounded integer kernels (int64, the kernel's shape).
    kernel : numpy.ndarray
        ``integers * scale`` (float32): the quantize-dequantized kernel to use.
    mse_nearest, mse : float
        Mean squared output error (per output element, on all the rows given) with nearest
        rounding and with the learned rounding.
    flipped : float
        Fraction of weights rounded the other way than nearest rounding.
    kept_nearest : bool
        The learned rounding was worse than nearest on the rows given, and nearest was kept.
    history : list of dict
        Losses every ``log_every`` iterations.
    snapshots : dict
        ``{iteration: h(V)}`` at the iterations asked for.
    """

    integers: np.ndarray
    nearest: np.ndarray
    kernel: np.ndarray
    mse_nearest: float
    mse: float
    flipped: float
    kept_nearest: bool = False
    iterations: int = 0
    seconds: float = 0.0
    history: list = field(default_factory=list)
    snapshots: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        kept = ", kept nearest" if self.kept_nearest else ""
        return (f"RoundingResult({self.integers.size} weights, {self.iterations} iterations, output MSE "
                f"{self.mse_nearest:.4g} (nearest) -> {self.mse:.4g}, {self.flipped:.1%} flipped{kept})")


def _check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def optimize_rounding(inputs, target, kernel, scale, num_bits: int, bias=None, activation: str = "linear",
                      depthwise: bool = False, iterations: int = 1000, batch_size: int = 1024, lr: float = 1e-2,
                      reg: float = 0.01, warmup: float = 0.2, beta_range=(20.0, 2.0), seed: int = 0,
                      keep_better: bool = True, snapshots=(), log_every: int = 50,
                      threads: int | None = 1) -> RoundingResult:
    """Learn the rounding of one layer's kernel (the AdaRound problem, in numpy with Adam).

    The loss is the squared output error summed over outputs and averaged over rows, plus the
    regulariser. A layer without activation has a quadratic loss: it is computed exactly on all
    rows from ``H = x^T x / R`` (unless the layer has more than ``2 * batch_size`` inputs); with a
    ReLU, on random batches of ``batch_size`` rows.

    Parameters
    ----------
    inputs : array_like
        The layer's input rows: ``(R, K)`` for a matrix kernel ``(K, O)`` (a dense layer, or a
        convolution's patches, im2col), ``(R, K, C)`` for a depthwise kernel ``(K, C, M)``.
    target : array_like
        ``(R, O)``: what the outputs should be (the float layer's output, after ``activation``).
    kernel : array_like
        The float kernel, output channels last (``O``, or ``C*M`` for depthwise).
    scale : float or array_like
        The grid's step, per tensor or one per output channel (from :func:`qlib.layers.quantize_kernel`).
    num_bits : int
        Symmetric narrow-range grid ``[-(2^(b-1) - 1), 2^(b-1) - 1]``, as TFLite stores weights.
    bias : array_like, optional
        ``(O,)``, added before the activation.
    activation : {"linear", "relu", "relu6"}
        The activation applied to the outputs before comparing with ``target``.
    depthwise : bool
        ``inputs``/``kernel`` are in the depthwise form.
    iterations, batch_size, lr : int, int, float
        Adam steps (on random batches of ``batch_size`` rows when there is an activation),
        learning rate ``lr``. ``iterations=0`` returns nearest rounding.
    reg, warmup, beta_range : float, float, tuple
        The regulariser's weight, the warm-up fraction without it, and the annealed exponent.
    seed : int
        Seeds the batches.
    keep_better : bool
        If the learned rounding's error on all rows is above nearest rounding's, return nearest.
    snapshots : iterable of int
        Iterations at which to keep a copy of ``h(V)`` (iteration ``iterations`` is the end).
    log_every : int
        Record the losses in ``history`` every so many iterations.
    threads : int or None
        BLAS threads for the optimisation (``None``: the library's default). One is fastest for
        the small products of most layers, and on a shared machine; run models in parallel instead.

    Examples
    --------
    Two weights of a one-output layer whose inputs are strongly correlated: nearest rounding puts
    both errors in the same direction, where they add up; AdaRound rounds one of them the other way.

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(512, 1))
    >>> x = np.hstack([z, z + 0.1 * rng.normal(size=(512, 1))])
    >>> w = np.array([[0.34], [0.34]])
    >>> r = optimize_rounding(x, x @ w, w, scale=1 / 7, num_bits=4, iterations=300)
    >>> r.nearest.ravel().tolist(), sorted(r.integers.ravel().tolist()), r.mse < r.mse_nearest
    ([2, 2], [2, 3], True)
    """
    num_bits = check_num_bits(num_bits)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    iterations = _check_int(iterations, "iterations", 0)
    batch_size = _check_int(batch_size, "batch_size", 1)
    w = np.asarray(kernel, np.float64)
    x = np.asarray(inputs, np.float32)
    t = np.asarray(target, np.float32)
    if depthwise:
        if w.ndim == 2:
            w = w[:, :, None]
        if w.ndim != 3 or x.ndim != 3 or x.shape[1:] != w.shape[:2]:
            raise ValueError(f"depthwise form: inputs (R, K, C) and kernel (K, C, M) must agree, got inputs "
                             f"{x.shape} and kernel {np.shape(kernel)}")
        n_out = w.shape[1] * w.shape[2]
    else:
        if w.ndim != 2 or x.ndim != 2 or x.shape[1] != w.shape[0]:
            raise ValueError(f"matrix form: inputs (R, K) and kernel (K, O) must agree, got inputs {x.shape} and "
                             f"kernel {w.shape}; reshape a conv kernel (kh, kw, I, O) to (kh*kw*I, O) and its "
                             "input to patches")
        n_out = w.shape[1]
    if t.shape != (x.shape[0], n_out):
        raise ValueError(f"target must have shape (rows, outputs) = {(x.shape[0], n_out)}, got {t.shape}")
    s = np.asarray(scale, np.float64)
    if s.ndim not in (0, 1) or (s.ndim == 1 and s.size != n_out) or np.any(s <= 0):
        raise ValueError(f"scale must be a positive scalar or one per output channel ({n_out}), got shape {s.shape}")
    s = s.reshape(w.shape[1:]) if s.ndim == 1 else s
    b = np.zeros(n_out, np.float32) if bias is None else np.asarray(bias, np.float32).reshape(n_out)
    qmin, qmax = integer_range(num_bits, narrow_range=True)
    with threadpool_limits(limits=threads, user_api="blas"):
        form = _Form(x, w.shape, depthwise)
        del x
        return _optimize(t, w, s, b, qmin, qmax, form, activation, iterations, batch_size, lr, reg, warmup,
                         beta_range, seed, keep_better, snapshots, log_every, np.shape(kernel))


def _optimize(t, w, s, b, qmin, qmax, form, activation, iterations, batch_size, lr, reg, warmup, beta_range,
              seed, keep_better, snapshots, log_every, shape):
    ratio = w / s
    floor = np.floor(ratio)
    rest = ratio - floor
    nearest = np.clip(round_half_away(ratio), qmin, qmax).astype(np.int64)
    movable = rest > 0  # on a level already: floor == ceil, nothing to learn
    # start at the float weight, on the side of 1/2 that nearest rounding (ties away from zero) picks
    v = init_logits(np.where(movable, rest, 0.5))
    up = (nearest > floor) & movable
    v = np.where(up, np.maximum(v, 1e-6), np.minimum(v, -1e-6)).astype(np.float32)
    frozen_h = np.where(up, 1.0, 0.0).astype(np.float32)
    mov = movable.astype(np.float32)
    s32 = np.broadcast_to(s, w.shape).astype(np.float32)
    floor32 = floor.astype(np.float32)

    def hard(vv):
        return np.clip(floor + ((vv > 0) & movable), qmin, qmax).astype(np.int64)

    start = time.time()
    rows = form.rows
    k_in = w.shape[0]
    # without an activation the loss is quadratic: exact on all rows from x^T x, cheaper unless the
    # layer has more inputs than twice the rows a batch would use (e.g. a classifier on few images)
    quadratic = activation == "linear" and (form.depthwise or k_in <= 2 * min(batch_size, rows))
    if quadratic:
        h64, c64 = form.gram(t - b)
        gram_h, gram_c = h64.astype(np.float32), c64.astype(np.float32)
        const = float(np.mean(np.sum((t.astype(np.float64) - b) ** 2, axis=1)))

    def mse(ints):
        """Mean squared output error per element on all rows (exact from the Gram matrix when quadratic)."""
        if quadratic:
            wk = ints * s
            return max(float(np.sum(wk * form.gram_grad(h64, wk)) - 2 * np.sum(wk * c64)) + const, 0.0) / t.shape[1]
        wk = (ints * s).astype(np.float32)
        total = 0.0
        for lo in range(0, rows, 4096):
            y, _ = _activate(form.forward(wk, slice(lo, lo + 4096)) + b, activation)
            total += float(np.sum((y - t[lo:lo + 4096]) ** 2, dtype=np.float64))
        return total / t.size
    rng = np.random.default_rng(seed)
    m1, m2 = np.zeros_like(v), np.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    history, snaps = [], {}
    wanted = {int(i) for i in snapshots}
    for it in range(iterations):
        sig = _sigmoid(v)
        h_raw = sig * np.float32(ZETA - GAMMA) + np.float32(GAMMA)
        h = mov * np.clip(h_raw, 0.0, 1.0) + (1 - mov) * frozen_h
        if it in wanted:
            snaps[it] = h.copy()
        qv = floor32 + h
        inside = (qv >= qmin) & (qv <= qmax)
        wk = s32 * np.clip(qv, qmin, qmax)
        if quadratic:
            hw = form.gram_grad(gram_h, wk)
            rec = float(np.sum(wk * hw) - 2 * np.sum(wk * gram_c)) + const
            grad_w = 2.0 * (hw - gram_c)
        else:
            idx = rng.integers(0, rows, size=batch_size) if batch_size < rows else slice(None)
            tb = t[idx]
            y, dact = _activate(form.forward(wk, idx) + b, activation)
            diff = y - tb
            n = diff.shape[0]
            rec = float(np.sum(diff * diff)) / n
            g = (2.0 / n) * diff
            if dact is not None:
                g = g * dact
            grad_w = form.grad(g, idx).reshape(w.shape)
        grad_h = grad_w * s32 * inside
        beta = beta_schedule(it, iterations, warmup, beta_range)
        reg_loss = 0.0
        if beta is not None and reg > 0:
            a = 2.0 * h - 1.0
            pa = np.abs(a) ** np.float32(beta - 1)
            reg_loss = reg * float(np.sum(mov * (1.0 - pa * np.abs(a))))
            grad_h = grad_h - np.float32(2 * reg * beta) * pa * np.sign(a)
        grad_v = grad_h * (np.float32(ZETA - GAMMA) * sig * (1.0 - sig)) * (mov * (h_raw > 0) * (h_raw < 1))
        m1 = b1 * m1 + (1 - b1) * grad_v
        m2 = b2 * m2 + (1 - b2) * grad_v * grad_v
        v = v - np.float32(lr / (1 - b1 ** (it + 1))) * m1 / (np.sqrt(m2 / np.float32(1 - b2 ** (it + 1))) + eps)
        if log_every and (it % log_every == 0 or it == iterations - 1):
            soft = (h > 0) & (h < 1) & movable
            history.append({"iteration": it, "reconstruction": rec, "regularizer": reg_loss, "beta": beta,
                            "soft": float(soft.sum() / max(movable.sum(), 1))})
    if iterations in wanted:
        snaps[iterations] = (mov * rectified_sigmoid(v) + (1 - mov) * frozen_h).astype(np.float32)
    ints = hard(v)
    err_near = mse(nearest)
    err = mse(ints) if iterations else err_near
    kept = False
    if keep_better and err > err_near:
        ints, err, kept = nearest, err_near, True
    kernel_out = (ints * s).astype(np.float32)
    return RoundingResult(ints.reshape(shape), nearest.reshape(shape), kernel_out.reshape(shape), err_near, err,
                          float(np.mean(ints != nearest)), kept, int(iterations), time.time() - start, history,
                          snaps)


# --- whole models -------------------------------------------------------------------------------

def _fused_activation(layer, model) -> str:
    """The activation TFLite applies inside this layer's op (its own, or a ReLU/ReLU6 it is fused with)."""
    own = inline_activation(layer)
    if own != "linear":
        if own not in ACTIVATIONS:
            raise ValueError(f"layer {layer.name!r}: inline activation {own!r} is not supported (relu, relu6, linear)")
        return own
    nxt = consumers(layer, model)
    if len(nxt) == 1 and is_relu(nxt[0]):
        return "relu"
    if len(nxt) == 1 and is_relu6(nxt[0]):
        return "relu6"
    return "linear"


def _geometry(layer, in_shape):
    """Kernel size, strides and padding (before) of a conv layer, and its output spatial size."""
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    if tuple(layer.dilation_rate) != (1, 1):
        raise ValueError(f"layer {layer.name!r}: dilated convolutions are not supported by adaround")
    if getattr(layer, "groups", 1) != 1:
        raise ValueError(f"layer {layer.name!r}: grouped convolutions are not supported by adaround")
    if layer.data_format != "channels_last":
        raise ValueError(f"layer {layer.name!r}: only channels_last convolutions are supported by adaround")
    h, w = in_shape[1], in_shape[2]
    if layer.padding == "valid":
        return (kh, kw), (sh, sw), (0, 0, 0, 0), ((h - kh) // sh + 1, (w - kw) // sw + 1)
    oh, ow = -(-h // sh), -(-w // sw)
    ph, pw = max((oh - 1) * sh + kh - h, 0), max((ow - 1) * sw + kw - w, 0)
    return (kh, kw), (sh, sw), (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2), (oh, ow)


def _rows(layer, x, n, i, j):
    """The layer's input rows (im2col) at output positions ``(n, i, j)`` of the batch ``x``."""
    k = kind(layer)
    if k == "dense":
        if x.ndim != 2:
            raise ValueError(f"layer {layer.name!r}: Dense on a {x.ndim}-D input is not supported by adaround")
        return x[n]
    (kh, kw), (sh, sw), (pt, pb, pl, pr), _ = _geometry(layer, x.shape)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0))) if pt + pb + pl + pr else x
    di, dj = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    patches = xp[n[:, None, None], i[:, None, None] * sh + di, j[:, None, None] * sw + dj, :]  # (R, kh, kw, C)
    if k == "depthwise":
        return patches.reshape(len(n), kh * kw, x.shape[-1])
    return patches.reshape(len(n), -1)


@dataclass
class LayerReport:
    """One layer's line in :class:`AdaRoundReport` (errors: mean squared output error per element;
    ``undecided``: fraction of the learnable ``h(V)`` still strictly between 0 and 1 at the end)."""

    name: str
    kind: str
    weights: int
    rows: int
    activation: str
    mse_nearest: float
    mse: float
    flipped: float
    kept_nearest: bool
    undecided: float
    seconds_data: float
    seconds_optimize: float

    def as_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class AdaRoundReport:
    """What :func:`adaround` did, per layer: output error before (nearest) and after, time, flips."""

    weight_bits: int
    per_channel: bool
    iterations: int
    calibration_samples: int
    layers: list = field(default_factory=list)
    seconds: float = 0.0

    def __repr__(self) -> str:
        better = sum(l.mse < l.mse_nearest for l in self.layers)
        return (f"AdaRoundReport(W{self.weight_bits} {'per channel' if self.per_channel else 'per tensor'}, "
                f"{len(self.layers)} layers ({better} with a lower output error than nearest), "
                f"{self.iterations} iterations, {self.calibration_samples} calibration samples, {self.seconds:.1f} s)")

    def table(self) -> list[dict]:
        """One dict per layer (for a ``pandas.DataFrame``)."""
        return [l.as_dict() for l in self.layers]


def adaround(model, calibration_data, weight_bits: int = 4, per_channel: bool = False, *,
             activation_bits: int | None = 8, activation_data=None, range_setter=None,
             activation_range_setter=minmax, iterations: int = 1000, batch_size: int = 1024, lr: float = 1e-2,
             reg: float = 0.01, warmup: float = 0.2, beta_range=(20.0, 2.0), rows: int = 16384,
             max_row_floats: int = 2 ** 25, layers=None, keep_better: bool = True, seed: int = 0,
             predict_batch: int = 256, threads: int | None = 1, verbose: bool = False):
    """AdaRound every weighted layer of ``model``, in order; a simulated-quantization model like
    :func:`qlib.simulate.quantize_model`'s, with learned instead of nearest rounding.

    Parameters
    ----------
    model : keras.Model
        The float model (BatchNorm is folded here); e.g. the output of :func:`qlib.dfq.dfq`.
    calibration_data : array_like
        Unlabelled inputs the rounding is learned on (a few hundred to a thousand images; never
        the test set).
    weight_bits : int
        Weight bit width (symmetric, narrow range, as TFLite stores weights).
    per_channel : bool
        One weight scale per output channel instead of one per tensor.
    activation_bits : int or None
        Activation bit width (FakeQuant after every tensor TFLite stores); ``None``: float activations.
    activation_data : array_like, optional
        Inputs for the activation ranges; by default ``calibration_data``. Pass the same data as
        :func:`~qlib.simulate.quantize_model` was given to compare the roundings alone.
    range_setter, activation_range_setter
        Weight and activation range setters (:mod:`qlib.ranges`), as in ``quantize_model``.
    iterations, batch_size, lr, reg, warmup, beta_range
        The per-layer optimisation (:func:`optimize_rounding`). ``iterations=0`` gives nearest rounding.
    rows : int
        Output positions sampled per layer (seeded) from all calibration images and pixels.
    max_row_floats : int
        Fewer rows for layers whose rows are long (depthwise layers: ``kh*kw*C`` floats per row).
    layers : list of str, optional
        Round only these layers (by name) with AdaRound; the others keep nearest rounding.
    keep_better : bool
        Keep nearest rounding for a layer where the learned one reconstructs worse.
    seed : int
        Seeds the sampled positions and the batches.
    predict_batch : int
        Images per forward pass when collecting layer inputs and outputs (lower it for large inputs).
    threads : int or None
        BLAS threads for the per-layer optimisation (see :func:`optimize_rounding`).
    verbose : bool
        Print one line per layer.

    Returns
    -------
    keras.Model
        Same layers and names as ``Simulator.quantize``'s output; ``model.adaround_report`` is
        the :class:`AdaRoundReport`.

    Examples
    --------
    >>> inp = keras.Input((6, 6, 2), name="image")
    >>> x = keras.layers.ReLU(name="relu")(keras.layers.Conv2D(4, 3, name="conv")(inp))
    >>> x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    >>> model = keras.Model(inp, keras.layers.Dense(3, name="fc")(x), name="tiny")
    >>> calib = np.random.default_rng(0).normal(size=(64, 6, 6, 2)).astype("float32")
    >>> q = adaround(model, calib, weight_bits=3, iterations=100)
    >>> q.adaround_report
    AdaRoundReport(W3 per tensor, 2 layers (... with a lower output error than nearest), 100 iterations, 64 calibration samples, ... s)
    >>> all(l.mse <= l.mse_nearest for l in q.adaround_report.layers)
    True
    >>> [l.name for l in q.layers] == [l.name for l in Simulator(model, calib).quantize(3, 8).layers]
    True
    """
    start = time.time()
    weight_bits = check_num_bits(weight_bits, "weight_bits")
    iterations = _check_int(iterations, "iterations", 0)
    rows = _check_int(rows, "rows", 1)
    predict_batch = _check_int(predict_batch, "predict_batch", 1)
    model = as_functional(model)
    data = check_batch(calibration_data, model.input.shape[1:], "calibration_data").astype(np.float32)
    if isinstance(layers, str):
        layers = [layers]
    if layers is not None:  # BatchNorm folding keeps the weighted layers' names
        names = [l.name for l in model.layers if isinstance(l, WEIGHTED)]
        unknown = sorted(set(layers) - set(names))
        if unknown:
            raise ValueError(f"layers {unknown} are not weighted layers of the model; it has {names}")
    sim = Simulator(model, data if activation_data is None else activation_data)
    q = sim.quantize(weight_bits, activation_bits, per_channel, range_setter, activation_range_setter)
    folded = sim.folded
    weighted = [l for l in folded.layers if isinstance(l, WEIGHTED)]
    if layers is not None:
        weighted = [l for l in weighted if l.name in layers]
    report = AdaRoundReport(weight_bits, bool(per_channel), iterations, int(data.shape[0]))
    rng = np.random.default_rng(seed)
    positions = {l.name: _positions(l, data.shape[0], rows, max_row_floats, rng) for l in weighted}
    t0 = time.time()
    targets = _float_targets(folded, weighted, positions, data, predict_batch)
    share = (time.time() - t0) / max(len(weighted), 1)  # the float pass, shared by all layers
    inputs = LayerInputs(q, [l.name for l in weighted], data, predict_batch)
    for layer in weighted:
        t0 = time.time()
        qlayer = q.get_layer(layer.name)
        kernel = np.asarray(layer.get_weights()[0], np.float64)
        _, params = quantize_kernel(layer, kernel, weight_bits, per_channel, range_setter)
        qweights = qlayer.get_weights()
        bias = qweights[1] if len(qweights) > 1 else None
        act = _fused_activation(layer, folded)
        k = kind(layer)
        n, i, j = positions[layer.name]
        x_rows = _rows(layer, inputs.next(), n, i, j).astype(np.float32)
        t_rows, _ = _activate(targets.pop(layer.name), act)
        t1 = time.time()
        res = optimize_rounding(x_rows, t_rows, _form_kernel(k, kernel), params.scale, weight_bits, bias, act,
                                k == "depthwise", iterations, batch_size, lr, reg, warmup, beta_range,
                                int(rng.integers(2 ** 31)), keep_better, threads=threads)
        # the grid is quantize_kernel's: the biases Simulator put on the int32 grid stay valid
        qlayer.set_weights([res.kernel.reshape(kernel.shape)] + qweights[1:])
        report.layers.append(LayerReport(layer.name, k, int(kernel.size), int(x_rows.shape[0]), act, res.mse_nearest,
                                         res.mse, res.flipped, res.kept_nearest,
                                         res.history[-1]["soft"] if res.history else 0.0, t1 - t0 + share,
                                         time.time() - t1))
        if verbose:
            print(f"{layer.name:16s} {k:9s} {kernel.size:7d} weights {x_rows.shape[0]:6d} rows {act:6s} output MSE "
                  f"{res.mse_nearest:.4g} -> {res.mse:.4g} ({res.flipped:.1%} flipped, "
                  f"{report.layers[-1].undecided:.1%} undecided), data {t1 - t0:.1f} s, "
                  f"optimisation {time.time() - t1:.1f} s", flush=True)
    report.seconds = time.time() - start
    q.adaround_report = report
    return q


def _form_kernel(layer_kind, kernel):
    """The kernel in :func:`optimize_rounding`'s form (output channels last, as :func:`qlib.layers.outputs_last`)."""
    if layer_kind == "depthwise":
        kh, kw, c, mult = kernel.shape
        return kernel.reshape(kh * kw, c, mult)
    if layer_kind == "conv2d":
        return kernel.reshape(-1, kernel.shape[-1])
    return kernel


def _positions(layer, n_img, rows, max_row_floats, rng):
    """Randomly chosen output positions ``(n, i, j)`` of the calibration images for one layer."""
    if kind(layer) == "dense":
        per_image, ow, row_len = 1, 1, int(layer.kernel.shape[0])
    else:
        _, _, _, (oh, ow) = _geometry(layer, tuple(layer.input.shape))
        per_image = oh * ow
        kh, kw = layer.kernel_size
        row_len = kh * kw * int(layer.input.shape[-1])
    total = n_img * per_image
    want = max(1, min(rows, total, max_row_floats // max(row_len, 1)))
    pos = np.sort(rng.choice(total, size=want, replace=False)) if want < total else np.arange(total)
    n, rem = np.divmod(pos, per_image)
    i, j = np.divmod(rem, ow)
    return n, i, j


def _numpy(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def _float_targets(folded, layers, positions, data, batch):
    """Every layer's float output (before its fused activation) at its positions, in one pass."""
    probe = keras.Model(folded.input, [folded.get_layer(l.name).output for l in layers])
    parts = {l.name: [] for l in layers}
    for lo in range(0, data.shape[0], batch):
        outs = probe(data[lo:lo + batch], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for layer, out in zip(layers, outs):
            n, i, j = positions[layer.name]
            sel = (n >= lo) & (n < lo + batch)
            if np.any(sel):
                out = _numpy(out)
                parts[layer.name].append(out[n[sel] - lo] if kind(layer) == "dense" else out[n[sel] - lo, i[sel], j[sel]])
    return {k: np.concatenate(v).reshape(len(positions[k][0]), -1).astype(np.float32) for k, v in parts.items()}


class LayerInputs:
    """The inputs of each weighted layer in the quantized model ``q``, layer after layer, each computed
    from the ones before it (not from the image again): one forward pass through the network in all.

    Before layer ``i`` is rounded, its input is computed from the latest already-known tensors it
    depends on (the previous layer's input, and a residual branch's), with the layers in between as
    they are now; a known tensor is forgotten after the last layer that needs it. AdaRound rounds
    layer after layer on these inputs (the quantized network's own, as in the paper's asymmetric
    reconstruction), so a layer sees the errors of the layers already rounded.

    Examples
    --------
    >>> import keras
    >>> from qlib.simulate import Simulator
    >>> keras.utils.set_random_seed(0)
    >>> inp = keras.Input((4, 4, 1))
    >>> h = keras.layers.Conv2D(2, 3, padding="same", name="c")(inp)
    >>> m = keras.Model(inp, keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(h)))
    >>> data = np.random.default_rng(0).normal(size=(5, 4, 4, 1)).astype(np.float32)
    >>> q = Simulator(m, data).quantize(8, 8)
    >>> stream = LayerInputs(q, ["c", "fc"], data, batch=2)
    >>> stream
    LayerInputs(2 layers, 5 samples, next: 'c')
    >>> stream.next().shape, stream.next().shape
    ((5, 4, 4, 1), (5, 32))
    """

    def __init__(self, q, names, data, batch):
        self.q, self.batch, self.n, self.names = q, batch, data.shape[0], list(names)
        # the sub-models are cut from a copy: in Keras 3 a Model made from intermediate tensors calls
        # their layers again, and a layer called twice in ``q`` would stop qlib.export (shared layers)
        self.work = keras.models.clone_model(q)
        self.targets = [self.work.get_layer(n).input for n in names]
        known = {id(self.work.input)}
        self.plan = []
        for target in self.targets:
            self.plan.append([target] if id(target) in known else _boundary(target, known))
            known.add(id(target))
        self.last = {}
        for i, tensors in enumerate(self.plan):
            for t in tensors:
                self.last[id(t)] = i
        self.values = {id(self.work.input): data}
        self.step = 0

    def __repr__(self) -> str:
        nxt = repr(self.names[self.step]) if self.step < len(self.names) else "none"
        return f"LayerInputs({len(self.names)} layers, {self.n} samples, next: {nxt})"

    def next(self):
        """The next layer's input, for all calibration samples."""
        i, target = self.step, self.targets[self.step]
        needed = self.plan[i]
        if id(target) in self.values:
            value = self.values[id(target)]
        else:
            self.work.set_weights(self.q.get_weights())  # the layers rounded so far, as they are now in q
            sub = keras.Model(needed if len(needed) > 1 else needed[0], target)
            parts = []
            for lo in range(0, self.n, self.batch):
                args = [self.values[id(t)][lo:lo + self.batch] for t in needed]
                parts.append(_numpy(sub(args if len(args) > 1 else args[0], training=False)))
            value = np.concatenate(parts)
        self.values[id(target)] = value
        for key in [k for k in self.values if self.last.get(k, -1) <= i and k != id(target)]:
            del self.values[key]
        if self.last.get(id(target), -1) <= i:
            del self.values[id(target)]
        self.step += 1
        return value


def _boundary(target, known: set) -> list:
    """The known tensors ``target`` is computed from: walk the graph back from it, stopping at them."""
    found, stack, seen = [], [target], set()
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if id(t) in known:
            found.append(t)
            continue
        op, node_index, _ = t._keras_history
        parents = op._inbound_nodes[node_index].input_tensors
        if not parents:
            raise ValueError(f"tensor {t.name!r} depends on an input that is not the model's input")
        stack.extend(parents)
    return found

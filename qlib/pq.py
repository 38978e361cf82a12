"""Product quantization of weights with look-up-table inference (Q-CNN, Wu et al. 2016).

A dense (or 1x1-conv) kernel ``W`` of shape ``(D, O)`` maps an input vector ``x`` of length ``D``
to ``x @ W``. Split the input dimension into ``M`` subspaces of ``d = D / M`` entries. In
subspace ``m`` each output channel ``j`` has a sub-vector ``W[m*d:(m+1)*d, j]``; product
quantization replaces it by one of ``K`` codewords of a codebook learnt for that subspace, so
the layer is stored as ``M`` codebooks (``K x d`` floats each) and ``M x O`` small integers.

Inference needs no decoded weights: for each subspace, the inner products of the input's
sub-vector with all ``K`` codewords form a table (``K * D`` multiply-adds in all); every output is
then a sum of ``M`` looked-up entries (``M * O`` additions), against ``D * O`` multiply-adds for
the dense layer.

Q-CNN learns the codebooks to minimise the error of the layer's *response* on calibration
inputs, ``|| X W - X W_hat ||``, not the weight error ``|| W - W_hat ||``: :func:`fit` starts
from k-means on the weights (which is the same minimisation with ``X = I``) and alternates exact
codebook and assignment updates on the response error. Both only need the Gram matrix
``X^T X``, so the number of calibration rows does not matter after one pass.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._checks import check_array
from .layers import is_weighted, kind

__all__ = ["kmeans", "ProductQuantizer", "fit", "table_costs", "pq_bits", "pq_layers", "CompressionReport",
           "compress_model"]


def _float(x) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def kmeans(points, k: int, iterations: int = 25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding: ``(centroids (k, d), assignment (n,))``.

    Deterministic for a given ``seed``. A cluster that empties keeps its centroid.

    Examples
    --------
    >>> pts = np.array([[0.0], [0.1], [5.0], [5.2]])
    >>> c, a = kmeans(pts, 2)
    >>> sorted(c.ravel().round(2).tolist()), bool(a[0] == a[1] != a[2] == a[3])
    ([0.05, 5.1], True)
    """
    pts = check_array(points, "points").astype(np.float64)
    if pts.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n points, d), got shape {pts.shape}")
    k = _check_positive_int(k, "k")
    n = pts.shape[0]
    if k > n:
        raise ValueError(f"k={k} clusters asked for {n} points; k must be at most the number of points")
    rng = np.random.default_rng(seed)
    centroids = np.empty((k, pts.shape[1]))
    centroids[0] = pts[rng.integers(n)]
    d2 = np.sum((pts - centroids[0]) ** 2, axis=1)
    for i in range(1, k):  # k-means++: far points are likelier seeds
        total = d2.sum()
        idx = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centroids[i] = pts[idx]
        d2 = np.minimum(d2, np.sum((pts - centroids[i]) ** 2, axis=1))
    assign = np.zeros(n, dtype=np.int64)
    for it in range(iterations):
        dist = (np.sum(pts ** 2, 1)[:, None] - 2 * pts @ centroids.T + np.sum(centroids ** 2, 1)[None, :])
        new = np.argmin(dist, axis=1)
        if it and np.array_equal(new, assign):
            break
        assign = new
        for c in range(k):
            members = assign == c
            if members.any():
                centroids[c] = pts[members].mean(axis=0)
    return centroids, assign


def _as_matrix(weight) -> tuple[np.ndarray, tuple, str]:
    """A kernel as the ``(D, O)`` matrix the look-up path multiplies, its shape and its kind."""
    if is_weighted(weight):
        layer_kind = kind(weight)
        if layer_kind == "depthwise":
            raise ValueError(
                f"layer {weight.name!r} is a DepthwiseConv2D: product quantization is not supported for "
                "depthwise kernels. Each output channel reads a single input channel (a 3x3 kernel has "
                "9 weights per channel), so there is no input dimension to split into subspaces and no "
                "inner products to share; keep depthwise layers in 8 bits")
        weight = np.asarray(weight.kernel)
    w = check_array(weight, "weight").astype(np.float64)
    if w.ndim == 2:
        return w, w.shape, "dense"
    if w.ndim == 4:  # a Conv2D kernel (kh, kw, I, O): one row per (position, input channel) of a patch
        return w.reshape(-1, w.shape[-1]), w.shape, "conv2d"
    raise ValueError(f"weight must be a Dense kernel (D, O) or a Conv2D kernel (kh, kw, I, O), got shape "
                     f"{w.shape}; pass a DepthwiseConv2D as the layer to get the reason it is not supported")


def table_costs(input_dim: int, outputs: int, num_subspaces: int, codebook_size: int) -> dict:
    """Operations per input vector: the dense layer's multiply-adds against the look-up path's.

    The look-up path spends ``K * D`` multiply-adds on the tables (every sub-vector against every
    codeword) and ``M * O`` additions of looked-up entries.

    Examples
    --------
    >>> table_costs(512, 512, num_subspaces=128, codebook_size=32)
    {'dense_macs': 262144, 'table_macs': 16384, 'lookup_adds': 65536, 'mac_ratio': 16.0, 'op_ratio': 3.2}
    """
    dense = input_dim * outputs
    table = codebook_size * input_dim
    adds = num_subspaces * outputs
    return {"dense_macs": dense, "table_macs": table, "lookup_adds": adds,
            "mac_ratio": dense / table, "op_ratio": dense / (table + adds)}


def pq_bits(input_dim: int, outputs: int, num_subspaces: int, codebook_size: int,
            codebook_bits: int = 32) -> int:
    """Storage of a product-quantized kernel in bits: the codebooks plus the indices.

    ``K * D`` codebook entries of ``codebook_bits`` each, and ``M * O`` indices of
    ``ceil(log2 K)`` bits (at least 1).

    Examples
    --------
    >>> pq_bits(512, 512, 128, 32)          # 32 x 512 floats + 128 x 512 five-bit indices
    851968
    >>> 512 * 512 * 32 / pq_bits(512, 512, 128, 32)   # compression against float32
    9.846153846153847
    """
    index_bits = max(1, math.ceil(math.log2(codebook_size)))
    return codebook_size * input_dim * codebook_bits + num_subspaces * outputs * index_bits


class ProductQuantizer:
    """A product-quantized kernel: ``M`` codebooks of ``K`` codewords and an index per sub-vector.

    Made by :func:`fit`. ``codebooks`` has shape ``(M, K, d)``, ``codes`` ``(M, O)``;
    :meth:`decode` gives the approximated kernel, :meth:`matmul` runs the layer by table look-up.

    Examples
    --------
    >>> w = np.random.default_rng(0).normal(size=(8, 6))
    >>> pq = fit(w, num_subspaces=4, codebook_size=3)
    >>> pq
    ProductQuantizer(8x6 kernel: 4 subspaces of 2, 3 codewords each, 1.9x smaller than float32)
    >>> x = np.ones((2, 8))
    >>> bool(np.allclose(pq.matmul(x), x @ pq.decode()))
    True
    """

    def __init__(self, codebooks, codes, shape, objective_history=()):
        self.codebooks = np.asarray(codebooks, np.float64)
        codes = np.asarray(codes)
        self.shape = tuple(shape)
        self.objective_history = list(objective_history)
        m, k, d = self.codebooks.shape
        if codes.ndim != 2 or codes.shape[0] != m or codes.min() < 0 or codes.max() >= k:
            raise ValueError(f"codes {codes.shape} do not index {m} codebooks of {k} codewords")
        self.codes = codes.astype(np.uint8 if k <= 256 else np.uint16)   # the indices as stored: log2(K) bits

    @property
    def num_subspaces(self) -> int:
        return self.codebooks.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.codebooks.shape[1]

    @property
    def input_dim(self) -> int:
        return self.codebooks.shape[0] * self.codebooks.shape[2]

    @property
    def outputs(self) -> int:
        return self.codes.shape[1]

    def __repr__(self) -> str:
        m, k, d = self.codebooks.shape
        return (f"ProductQuantizer({self.input_dim}x{self.outputs} kernel: {m} subspaces of {d}, {k} codewords "
                f"each, {self.compression():.1f}x smaller than float32)")

    def decode(self) -> np.ndarray:
        """The approximated kernel, in the shape of the original weight."""
        m, _, d = self.codebooks.shape
        rows = [self.codebooks[i][self.codes[i]].T for i in range(m)]  # (d, O) per subspace
        return np.concatenate(rows, axis=0).reshape(self.shape)

    def tables(self, x) -> np.ndarray:
        """The look-up tables: inner products of every input sub-vector with every codeword.

        ``x`` has shape ``(..., D)``; the result ``(M, K, N)`` for the ``N`` input vectors, in
        ``x``'s precision (float32 stays float32).
        """
        x = _float(x)
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"x has {x.shape[-1]} features in its last axis; this kernel takes {self.input_dim}")
        m, _, d = self.codebooks.shape
        sub = x.reshape(-1, m, d).transpose(1, 2, 0)                       # (M, d, N)
        return np.matmul(self.codebooks.astype(x.dtype, copy=False), sub)  # (M, K, N)

    def matmul(self, x) -> np.ndarray:
        """``x @ decode()`` computed by table look-up: ``K * D`` multiply-adds, then ``M * O`` additions.

        ``x`` is ``(..., D)``: input vectors of a Dense layer, pixels of a 1x1 conv, or im2col
        patches (position-major, channel-minor) of a larger Conv2D. Computed in ``x``'s precision.
        """
        x = _float(x)
        tables = self.tables(x)
        out = np.zeros((self.outputs, tables.shape[-1]), x.dtype)
        for m in range(self.num_subspaces):
            out += tables[m].take(self.codes[m], axis=0)      # look up row codes[m, j] for output j
        return out.T.reshape(x.shape[:-1] + (self.outputs,))

    def bits(self, codebook_bits: int = 32) -> int:
        """Storage in bits (see :func:`pq_bits`)."""
        return pq_bits(self.input_dim, self.outputs, self.num_subspaces, self.codebook_size, codebook_bits)

    def compression(self, reference_bits: int = 32, codebook_bits: int = 32) -> float:
        """How many times smaller than the kernel stored with ``reference_bits`` per weight."""
        return self.input_dim * self.outputs * reference_bits / self.bits(codebook_bits)

    def costs(self) -> dict:
        """Operations per input vector (see :func:`table_costs`)."""
        return table_costs(self.input_dim, self.outputs, self.num_subspaces, self.codebook_size)


def _objective(w_hat, gram, cross) -> float:
    """``||T - X W_hat||^2 - ||T||^2`` (+ ridge term), from the Gram matrices only."""
    return float(np.sum(w_hat * (gram @ w_hat)) - 2 * np.sum(w_hat * cross))


def fit(weight, num_subspaces: int, codebook_size: int, inputs=None, targets=None, iterations: int = 10,
        ridge: float = 1e-2, seed: int = 0) -> ProductQuantizer:
    """Product-quantize a Dense or Conv2D kernel, Q-CNN style.

    Parameters
    ----------
    weight : array_like or keras layer
        A Dense kernel ``(D, O)``, a 1x1 Conv2D kernel ``(1, 1, D, O)`` or a ``(kh, kw, I, O)``
        Conv2D kernel (then ``D = kh * kw * I``, the im2col patch length). A Keras layer may be
        passed; a DepthwiseConv2D raises a ``ValueError`` explaining why it is not supported.
    num_subspaces : int
        ``M``, which must divide ``D``; each sub-vector has ``D / M`` entries.
    codebook_size : int
        ``K`` codewords per subspace, at most ``O`` (there are ``O`` sub-vectors to cluster).
    inputs : array_like, optional
        Calibration inputs ``(..., D)`` to the layer (pixels of a 1x1 conv, patches of a larger
        one). Given, the codebooks and assignments are refined to minimise the error of the
        response ``inputs @ weight`` (Q-CNN); without, it is plain k-means on the weights.
    targets : array_like, optional
        The responses to reproduce, ``(..., O)`` (default ``inputs @ weight``). Pass the float
        network's responses when ``inputs`` come from an already-compressed network, so that
        each layer also corrects the error of the layers before it (Q-CNN's error correction).
    iterations : int
        Rounds of alternating codebook and assignment updates on the response error.
    ridge : float
        Weight of the weight error beside the response error, relative to the mean input
        energy (keeps the least-squares updates well posed with few calibration rows).
    seed : int
        Seed of the k-means initialisation.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> w = rng.normal(size=(16, 32))
    >>> x = rng.normal(size=(200, 16)) * np.linspace(0.1, 3, 16)   # some inputs matter more
    >>> plain = fit(w, num_subspaces=8, codebook_size=4)
    >>> aware = fit(w, num_subspaces=8, codebook_size=4, inputs=x)
    >>> err = lambda pq: float(np.linalg.norm(x @ w - pq.matmul(x)))
    >>> err(aware) < err(plain)
    True
    >>> fit(w, num_subspaces=5, codebook_size=4)
    Traceback (most recent call last):
    ...
    ValueError: num_subspaces=5 does not divide the input dimension D=16; choose a divisor of 16: [1, 2, 4, 8, 16]
    """
    w, shape, _ = _as_matrix(weight)
    dim, outputs = w.shape
    num_subspaces = _check_positive_int(num_subspaces, "num_subspaces")
    codebook_size = _check_positive_int(codebook_size, "codebook_size")
    iterations = int(iterations)
    if dim % num_subspaces:
        divisors = [v for v in range(1, dim + 1) if dim % v == 0]
        raise ValueError(f"num_subspaces={num_subspaces} does not divide the input dimension D={dim}; "
                         f"choose a divisor of {dim}: {divisors[:12]}{' ...' if len(divisors) > 12 else ''}")
    if codebook_size > outputs:
        raise ValueError(f"codebook_size={codebook_size} is larger than the {outputs} sub-vectors to cluster in "
                         f"each subspace (one per output channel); use at most {outputs}")
    if codebook_size > 65536:
        raise ValueError(f"codebook_size={codebook_size} needs indices wider than 16 bits; use at most 65536")
    d = dim // num_subspaces
    codebooks = np.empty((num_subspaces, codebook_size, d))
    codes = np.empty((num_subspaces, outputs), np.int64)
    for m in range(num_subspaces):
        codebooks[m], codes[m] = kmeans(w[m * d:(m + 1) * d].T, codebook_size, seed=seed + m)
    pq = ProductQuantizer(codebooks, codes, shape)
    if inputs is None:
        if targets is not None:
            raise ValueError("targets need the inputs that produce them; pass inputs as well")
        return pq
    x = check_array(inputs, "inputs").astype(np.float64)
    if x.shape[-1] != dim:
        raise ValueError(f"inputs have {x.shape[-1]} features in their last axis; the kernel takes D={dim} "
                         "(for a kxk Conv2D pass im2col patches)")
    x = x.reshape(-1, dim)
    gram = x.T @ x
    if targets is None:
        cross = gram @ w
    else:
        t = check_array(targets, "targets").astype(np.float64).reshape(-1, outputs)
        if t.shape[0] != x.shape[0]:
            raise ValueError(f"targets hold {t.shape[0]} responses for {x.shape[0]} input vectors")
        cross = x.T @ t
    lam = float(ridge) * max(float(np.trace(gram)) / dim, 1e-12)
    gram = gram + lam * np.eye(dim)
    cross = cross + lam * w
    return _refine(pq, gram, cross, iterations)


def _refine(pq: ProductQuantizer, gram, cross, iterations: int) -> ProductQuantizer:
    """Alternate exact codebook and assignment updates of ``||T - X W_hat||^2 + lam ||W - W_hat||^2``."""
    codebooks, codes = pq.codebooks.copy(), pq.codes.copy()
    num_subspaces, k, d = codebooks.shape
    w_hat = ProductQuantizer(codebooks, codes, (pq.input_dim, pq.outputs)).decode()
    history = [_objective(w_hat, gram, cross)]
    for _ in range(iterations):
        for m in range(num_subspaces):
            sl = slice(m * d, (m + 1) * d)
            g_mm = gram[sl, sl]
            # what subspace m must produce given the others: X_m^T (T - sum_{m' != m} X_m' W_m')
            p = cross[sl] - gram[sl] @ w_hat + g_mm @ w_hat[sl]                # (d, O)
            # codebook: codeword c = g_mm^-1 (mean of p over the outputs assigned to it)
            onehot = codes[m][None, :] == np.arange(k)[:, None]              # (K, O)
            counts = onehot.sum(axis=1)
            used = counts > 0
            means = (onehot[used] @ p.T) / counts[used, None]
            codebooks[m, used] = np.linalg.solve(g_mm, means.T).T
            # assignment: for output j, the codeword minimising c^T g_mm c - 2 c^T p_j
            c = codebooks[m]
            cost = np.sum((c @ g_mm) * c, axis=1)[:, None] - 2 * c @ p
            codes[m] = np.argmin(cost, axis=0)
            w_hat[sl] = c[codes[m]].T
        history.append(_objective(w_hat, gram, cross))
        if history[-2] - history[-1] <= 1e-10 * max(1.0, abs(history[-2])):
            break
    return ProductQuantizer(codebooks, codes, pq.shape, history)


def pq_layers(model) -> list[str]:
    """Names of the layers product quantization applies to: 1x1 stride-1 Conv2D layers and Dense layers.

    The stem conv (a 3x3 kernel on 3 input channels) and the depthwise layers are left out.

    Examples
    --------
    >>> from qlib.models import mobilenet_v1
    >>> names = pq_layers(mobilenet_v1(alpha=0.25))
    >>> len(names), names[0], names[-1]
    (14, 'block1_pw', 'logits')
    """
    from .graph import as_functional

    out = []
    for layer in as_functional(model).layers:
        if not is_weighted(layer):
            continue
        k = kind(layer)
        if k == "dense" or (k == "conv2d" and tuple(layer.kernel_size) == (1, 1) and tuple(layer.strides) == (1, 1)
                            and getattr(layer, "groups", 1) == 1):
            out.append(layer.name)
    return out


class CompressionReport:
    """What :func:`compress_model` did, one record per layer, with whole-model totals.

    ``records`` hold per layer: ``name``, ``input_dim``, ``outputs``, ``num_subspaces``,
    ``codebook_size``, ``positions`` (pixels per image: how often the layer runs), the bits of
    the float32 kernel, of an int8 kernel and of the product-quantized kernel, the dense
    multiply-adds and the look-up path's operations per image, and the weight and response
    errors. ``quantizers`` maps layer names to their :class:`ProductQuantizer`.

    Examples
    --------
    >>> rec = {"name": "pw", "float32_bits": 32 * 128, "int8_bits": 8 * 128 + 32 * 16, "pq_bits": 256,
    ...        "dense_macs": 2048, "table_macs": 512, "lookup_adds": 512}
    >>> report = CompressionReport([rec], {})
    >>> report.totals()["compression_vs_float32"]
    16.0
    >>> report
    CompressionReport(1 layers: 16.0x smaller than float32, 6.0x smaller than int8; dense/look-up operations 2.00x)
    """

    def __init__(self, records: list, quantizers: dict):
        self.records, self.quantizers = records, quantizers

    def totals(self) -> dict:
        """Sums over the compressed layers, and the compression and operation ratios."""
        s = {k: sum(r[k] for r in self.records) for k in
             ("float32_bits", "int8_bits", "pq_bits", "dense_macs", "table_macs", "lookup_adds")}
        s["compression_vs_float32"] = s["float32_bits"] / s["pq_bits"]
        s["compression_vs_int8"] = s["int8_bits"] / s["pq_bits"]
        s["mac_ratio"] = s["dense_macs"] / s["table_macs"]
        s["op_ratio"] = s["dense_macs"] / (s["table_macs"] + s["lookup_adds"])
        return s

    def __repr__(self) -> str:
        t = self.totals()
        return (f"CompressionReport({len(self.records)} layers: {t['compression_vs_float32']:.1f}x smaller than "
                f"float32, {t['compression_vs_int8']:.1f}x smaller than int8; dense/look-up operations "
                f"{t['op_ratio']:.2f}x)")


def compress_model(model, subvector_length: int = 4, codebook_size: int = 32, calibration_data=None,
                   layers=None, iterations: int = 10, max_rows: int = 20000, seed: int = 0, refine: bool = True):
    """Product-quantize the 1x1 convolutions and the classifier of a model (BatchNorm folded first).

    Parameters
    ----------
    model : keras.Model
    subvector_length : int
        ``d``: entries per sub-vector; each layer gets ``M = D / d`` subspaces (``d`` must divide
        every compressed layer's input dimension).
    codebook_size : int
        ``K`` codewords per subspace; a layer with fewer than ``K`` output channels gets one
        codeword per channel (recorded in the report: it gains nothing).
    calibration_data : array_like, optional
        Model inputs. Given, every layer is refined on its response (Q-CNN): its inputs come from
        the network compressed so far and its targets from the float network, so each layer also
        absorbs the error of the layers before it. Without, plain k-means on the weights.
    layers : list of str, optional
        Layer names (default :func:`pq_layers`).
    iterations, seed
        As in :func:`fit`.
    refine : bool
        With ``calibration_data``: refine on the response (default), or keep the k-means
        codebooks and only measure each layer's response error (to compare the two).
    max_rows : int
        At most this many input vectors per layer (pixels are subsampled, seeded).

    Returns
    -------
    (keras.Model, CompressionReport)
        The folded model with the compressed layers' kernels replaced by their decoded kernels
        (it computes what the look-up path computes), and the report.

    Examples
    --------
    >>> import keras
    >>> inp = keras.Input((4, 4, 8), name="image")
    >>> h = keras.layers.ReLU(name="relu")(keras.layers.Conv2D(16, 1, name="pw")(inp))
    >>> m = keras.Model(inp, keras.layers.Dense(10, name="logits")(keras.layers.Flatten(name="flat")(h)))
    >>> x = np.random.default_rng(0).normal(size=(64, 4, 4, 8)).astype("float32")
    >>> small, report = compress_model(m, subvector_length=4, codebook_size=8, calibration_data=x)
    >>> [(r["name"], r["num_subspaces"], r["codebook_size"]) for r in report.records]
    [('pw', 2, 8), ('logits', 64, 8)]
    >>> bool(np.allclose(small(x).numpy(), m(x).numpy(), atol=1.0)), small.output_shape
    (True, (None, 10))
    """
    import keras

    from .folding import fold_batchnorm

    d = _check_positive_int(subvector_length, "subvector_length")
    k = _check_positive_int(codebook_size, "codebook_size")
    float_model = fold_batchnorm(model)
    work = keras.models.clone_model(float_model)
    work.set_weights(float_model.get_weights())
    names = list(layers) if layers is not None else pq_layers(float_model)
    for name in names:
        layer = float_model.get_layer(name)
        dim = layer.kernel.shape[-2]
        if layer.kernel.ndim == 4 and tuple(layer.kernel.shape[:2]) != (1, 1):
            raise ValueError(f"layer {name!r} has a {tuple(layer.kernel.shape[:2])} kernel; compress_model handles "
                             "1x1 convolutions and Dense layers (use fit on im2col patches for larger kernels)")
        if dim % d:
            raise ValueError(f"subvector_length={d} does not divide the input dimension {dim} of layer {name!r}")
    data = None if calibration_data is None else check_array(calibration_data, "calibration_data").astype(np.float32)
    if data is not None:  # every layer's float input at once; the compressed network's, one layer at a time
        float_inputs = dict(zip(names, _layer_inputs(float_model, names, data)))
        probe = _Probe(work, names)
    rng = np.random.default_rng(seed)
    records, quantizers = [], {}
    for name in names:
        src, dst = float_model.get_layer(name), work.get_layer(name)
        weights = src.get_weights()
        w = weights[0]
        dim, outputs = w.shape[-2], w.shape[-1]
        kk = min(k, outputs)
        positions = int(np.prod(src.output.shape[1:-1])) if len(src.output.shape) > 2 else 1
        if data is None:
            pq = fit(w, dim // d, kk, iterations=iterations, seed=seed)
            x_eval = None
        elif not refine:
            pq = fit(w, dim // d, kk, seed=seed)
            x_q, x_f = probe(name, data).reshape(-1, dim), float_inputs.pop(name).reshape(-1, dim)
            keep = rng.choice(x_q.shape[0], min(x_q.shape[0], 2000), replace=False)
            x_eval = (x_q[keep], x_f[keep])
        else:
            x_q = probe(name, data).reshape(-1, dim)
            x_f = float_inputs.pop(name).reshape(-1, dim)
            if x_q.shape[0] > max_rows:
                keep = rng.choice(x_q.shape[0], max_rows, replace=False)
                x_q, x_f = x_q[keep], x_f[keep]
            w2 = w.reshape(dim, outputs).astype(np.float64)
            pq = fit(w, dim // d, kk, inputs=x_q, targets=x_f.astype(np.float64) @ w2, iterations=iterations,
                     seed=seed)
            x_eval = (x_q, x_f)
        decoded = pq.decode().astype(np.float32)
        dst.set_weights([decoded] + weights[1:])
        quantizers[name] = pq
        costs = pq.costs()
        rec = {"name": name, "input_dim": int(dim), "outputs": int(outputs), "num_subspaces": pq.num_subspaces,
               "codebook_size": pq.codebook_size, "capped": kk < k, "positions": positions,
               "float32_bits": int(dim * outputs * 32), "int8_bits": int(dim * outputs * 8 + outputs * 32),
               "pq_bits": int(pq.bits()), "dense_macs": positions * costs["dense_macs"],
               "table_macs": positions * costs["table_macs"], "lookup_adds": positions * costs["lookup_adds"],
               "weight_error": float(np.linalg.norm(decoded - w) / max(np.linalg.norm(w), 1e-30))}
        if x_eval is not None:
            x_q, x_f = (v[:2000] for v in x_eval)
            ref = x_f.astype(np.float64) @ w.reshape(dim, outputs)
            rec["response_error"] = float(np.linalg.norm(ref - pq.matmul(x_q)) / max(np.linalg.norm(ref), 1e-30))
        records.append(rec)
    return work, CompressionReport(records, quantizers)


def _layer_inputs(model, names: list, data, batch_size: int = 250) -> list:
    """The inputs of layers ``names`` on ``data``, from one probe model (one trace, one pass)."""
    import keras

    probe = keras.Model(model.input, [model.get_layer(n).input for n in names])
    out = probe.predict(data, batch_size=batch_size, verbose=0)
    return [np.asarray(v) for v in (out if isinstance(out, (list, tuple)) else [out])]


class _Probe:
    """The input of one layer of ``model`` on ``data``, with the model's current weights.

    One multi-output probe model shares ``model``'s layers, so it sees each new kernel set
    on them without being rebuilt (its predict function is traced once); each call runs the
    network up to its last probed layer.
    """

    def __init__(self, model, names: list):
        import keras

        self.names = list(names)
        self.model = keras.Model(model.input, [model.get_layer(n).input for n in self.names])

    def __call__(self, name: str, data, batch_size: int = 250) -> np.ndarray:
        out = self.model.predict(data, batch_size=batch_size, verbose=0)
        return np.asarray(out[self.names.index(name)] if isinstance(out, (list, tuple)) else out)

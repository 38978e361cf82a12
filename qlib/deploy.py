"""Deploying to a phone: latency on the real kernels, a per-op profiler, and ``benchmark_model``'s output.

Three things a deployment needs, measured with LiteRT's own kernels:

- **Latency** (:func:`time_models`): single-thread ``invoke()`` times of several ``.tflite`` models,
  interleaved round by round so that a busy machine slows them all alike, with median and
  quartiles, by the wall clock and by the calling thread's CPU time (:class:`Timing`). Ratios
  between models are only meaningful within one call.
- **A per-op profile** (:func:`profile_ops`). LiteRT's Python API has no op profiler, so every op
  of the model is cut out into a single-op ``.tflite`` (:func:`op_models`: the op, its tensors and
  its constant buffers, through the flatbuffer schema module LiteRT ships) and timed with the same
  interpreter, kernels and threads, on the real intermediate tensors of the whole model, in
  passes that run the ops in the model's order. The cost of one ``invoke()`` call itself (Python
  and interpreter overhead, measured on a one-element op) is taken off each op and counted once,
  as it is in the whole model. :class:`Profile` compares the ops' sum with the whole model's
  time, and gives the MACs of every op beside its time.
- **The phone's own profiler output** (:func:`parse_benchmark_model`): the text that LiteRT's
  ``benchmark_model --enable_op_profiling=true`` prints on a device, parsed into the same rows.
  :func:`published_sample` is a real one, from the tool's README.

Host timings are host timings: an x86 CPU without int8 dot-product instructions runs int8 kernels
no faster than float ones (see the "Deploying to a Pixel" chapter). :data:`ANCHORS` holds the
published phone figures to put beside them, each with its source.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import os
import platform
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import flatbuffer as fb
from .data import verified_bytes
from .quantizers import round_half_away
from .tflite import KERNELS

__all__ = ["KERNELS", "ANCHORS", "SAMPLE_PATH", "float_tflite", "converter_int8", "litert_quantizer", "Timing", "time_models", "OpModel", "op_models",
           "OpTime", "Profile", "profile_ops", "BenchmarkOutput", "parse_benchmark_model", "published_sample",
           "host_info", "example_keras", "example_tflite"]


_HOSTED = ("tensorflow/tensorflow, tensorflow/lite/g3doc/guide/hosted_models.md at commit "
           "bbaab2372d35f7ca7224d06ea795c7a543ea45e0 (\"Performance numbers were benchmarked on Pixel-2 "
           "using single thread large core\")")

#: Published figures to put beside ours (theirs, not measured here), each with its source.
ANCHORS = (
    dict(entry="TFLite hosted MobileNet v1 1.0/224, float", device="Pixel 2, one big core, 1 thread",
         runtime_ms=160.1, size_mb=16.9, top1=0.710, source=_HOSTED),
    dict(entry="TFLite hosted MobileNet v1 1.0/224, int8", device="Pixel 2, one big core, 1 thread",
         runtime_ms=70.2, size_mb=4.3, top1=0.700, source=_HOSTED),
    dict(entry="TFLite hosted MobileNetV2 1.0/224, float", device="Pixel 2, one big core, 1 thread",
         runtime_ms=117.0, size_mb=14.0, top1=0.718, source=_HOSTED),
    dict(entry="TFLite hosted MobileNetV2 1.0/224, int8", device="Pixel 2, one big core, 1 thread",
         runtime_ms=80.3, size_mb=3.4, top1=0.708, source=_HOSTED),
    dict(entry="LPIRC 2018 winner (quantization-friendly MobileNets)", device="Pixel 2, one big core",
         runtime_ms=27.0, size_mb=None, top1=0.7267,
         source="Feng et al. 2019, arXiv:1903.06791, abstract (72.67% on the holdout set, 27 ms on average)"),
    dict(entry="LPIRC 2018 runner-up, before factorizing 1x1 convs", device="Pixel 2, one big core",
         runtime_ms=43.0, size_mb=None, top1=None,
         source="Hyperconnect, https://hyperconnect.github.io/2018/06/26/lpirc-2018.html"),
    dict(entry="LPIRC 2018 runner-up, factorized 1x1 convs", device="Pixel 2, one big core",
         runtime_ms=36.0, size_mb=None, top1=None,
         source="Hyperconnect, https://hyperconnect.github.io/2018/06/26/lpirc-2018.html"),
)

#: The real ``benchmark_model`` op-profiling output shipped with the book (see its README).
SAMPLE_PATH = Path(__file__).resolve().parents[1] / "data" / "benchmark_model" / "benchmark_model_mobilenet_v1_quant.txt"
_SAMPLE_SHA256 = "2d22f2006a1befdfc345bebeec21ce9df3968222f2593de5c2cf48f27b6dadff"


# --- the runtime ------------------------------------------------------------------------------

def _check_model(tflite_model, name: str = "tflite_model") -> bytes:
    if not isinstance(tflite_model, (bytes, bytearray)):
        raise TypeError(f"{name} must be the bytes of a .tflite file, got {type(tflite_model).__name__}")
    if bytes(tflite_model[4:8]) != b"TFL3":
        raise ValueError(f"{name} is not a .tflite flatbuffer (no 'TFL3' identifier); pass what a converter returns")
    return bytes(tflite_model)


def _check_kernels(kernels: str) -> str:
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {sorted(KERNELS)}, got {kernels!r}")
    return kernels


def _check_threads(num_threads) -> int:
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer (1 = one core, as LPIRC measured), got {num_threads!r}")
    return num_threads


def _interpreter(tflite_model: bytes, kernels: str = "default", num_threads: int = 1,
                 preserve_all_tensors: bool = False):
    """A ready LiteRT interpreter with the named kernel set and thread count (:func:`qlib.tflite.interpreter`)."""
    from .tflite import interpreter

    return interpreter(tflite_model, preserve_all_tensors=preserve_all_tensors, kernels=kernels,
                       num_threads=num_threads)


def float_tflite(model) -> bytes:
    """The float32 ``.tflite`` of a Keras model (TFLite's converter, no optimization).

    Examples
    --------
    >>> len(float_tflite(example_keras())) > 4 * example_keras().count_params()
    True
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    if not hasattr(model, "inputs"):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return conv.convert()


def converter_int8(model, calibration_data, per_channel: bool = True, int8_io: bool = True) -> bytes:
    """The TFLite converter's own full-integer post-training quantization, per channel or per tensor.

    Per channel is the converter's default (:func:`qlib.tflite.convert_int8`); per tensor uses
    its ``_experimental_disable_per_channel`` flag. Activation ranges come from the converter's
    own calibration on ``calibration_data``.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    >>> pt = converter_int8(example_keras(), x, per_channel=False)
    >>> [w.scales.size for w in __import__("qlib.tflite").tflite.weight_tensors(pt)][:2]
    [1, 1]
    """
    from .tflite import convert_int8

    if per_channel:
        return convert_int8(model, calibration_data, int8_io)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    data = np.asarray(calibration_data, np.float32)
    if data.ndim < 2 or data.shape[0] < 1:
        raise ValueError(f"calibration_data must be a batch (samples first), got shape {data.shape}")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([data[i:i + 1]] for i in range(data.shape[0]))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv._experimental_disable_per_channel = True
    if int8_io:
        conv.inference_input_type = conv.inference_output_type = tf.int8
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return conv.convert()


def litert_quantizer(float_model: bytes, calibration_data, weight_bits: int = 8, per_channel: bool = True) -> bytes:
    """Google's LiteRT quantizer (PyPI ``ai-edge-quantizer``): static W{weight_bits}A8 of a float ``.tflite``.

    Its min-max recipe (``static_wi8_ai8`` at 8 bits), weights per channel or per tensor, 4-bit
    weights stored as int4; activations calibrated on ``calibration_data`` through the float
    model.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    >>> q = litert_quantizer(float_tflite(example_keras()), x)
    >>> _interpreter(q).get_input_details()[0]["dtype"].__name__
    'int8'
    """
    try:
        from ai_edge_quantizer import qtyping, quantizer
    except ImportError as exc:  # pragma: no cover - pinned in requirements.txt
        raise ImportError("Google's LiteRT quantizer is not installed: pip install ai-edge-quantizer==0.10.0") from exc
    float_model = _check_model(float_model, "float_model")
    if weight_bits not in (4, 8):
        raise ValueError(f"weight_bits must be 4 or 8 (the quantizer's static recipes), got {weight_bits!r}")
    data = np.asarray(calibration_data, np.float32)
    sig = _interpreter(float_model, "optimized").get_signature_list()
    if len(sig) != 1:
        raise ValueError(f"float_model must have one signature, found {sorted(sig)}")
    key = next(iter(sig))
    name = sig[key]["inputs"][0]
    gran = qtyping.QuantGranularity.CHANNELWISE if per_channel else qtyping.QuantGranularity.TENSORWISE
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        qt = quantizer.Quantizer(bytearray(float_model))
        qt.add_static_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, 8, weight_bits, gran)
        calibration = qt.calibrate({key: [{name: data[i:i + 1]} for i in range(data.shape[0])]})
        return bytes(qt.quantize(calibration, enable_progress_report=False).quantized_model)


def _input_array(detail: dict, x, rng) -> np.ndarray:
    """The model's input: ``x`` (float) quantized as the model's QUANTIZE would, else seeded random data."""
    shape, dtype = tuple(int(d) for d in detail["shape"]), detail["dtype"]
    if x is None:
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)
        return rng.normal(size=shape).astype(dtype)
    x = np.asarray(x, np.float32)
    if x.shape != shape:
        raise ValueError(f"x must have the model's input shape {shape}, got {x.shape}")
    if np.issubdtype(dtype, np.integer):
        scale, zp = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(round_half_away(x / scale) + zp, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _ready(tflite_model: bytes, kernels: str, num_threads: int, x=None, seed: int = 0, inputs=None):
    it = _interpreter(tflite_model, kernels, num_threads)
    rng = np.random.default_rng(seed)
    for j, d in enumerate(it.get_input_details()):
        it.set_tensor(d["index"], inputs[j] if inputs is not None else _input_array(d, x, rng))
    return it


# --- latency ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """Single-call ``invoke()`` times of one model, in ms: median, quartiles and minimum of the
    wall-clock time, and the median, quartiles and minimum of the calling thread's CPU time.

    With one thread the CPU time is the time the kernels computed: on a shared machine the
    wall-clock time also counts the waits while other processes had the core. (With more
    threads the calling thread's CPU time misses the workers': the ``cpu_*`` fields are None.)
    """

    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    n: int
    cpu_median_ms: float | None = None
    cpu_q1_ms: float | None = None
    cpu_q3_ms: float | None = None
    cpu_min_ms: float | None = None

    def __repr__(self) -> str:
        cpu = "" if self.cpu_median_ms is None else f"; CPU time median {self.cpu_median_ms:.3f} ms"
        return (f"Timing(median {self.median_ms:.3f} ms [q1 {self.q1_ms:.3f}, q3 {self.q3_ms:.3f}], "
                f"min {self.min_ms:.3f}{cpu}, n={self.n})")

    @classmethod
    def from_samples(cls, seconds, cpu_seconds=None) -> "Timing":
        """From call durations in seconds (wall clock, and optionally the thread's CPU time).

        Examples
        --------
        >>> Timing.from_samples([0.001, 0.002, 0.003, 0.010])
        Timing(median 2.500 ms [q1 1.750, q3 4.750], min 1.000, n=4)
        >>> Timing.from_samples([0.001, 0.004], cpu_seconds=[0.001, 0.0012]).cpu_median_ms
        1.1
        """
        s = np.asarray(seconds, np.float64) * 1e3
        if s.size == 0:
            raise ValueError("no timing samples")
        q1, med, q3 = np.percentile(s, [25, 50, 75])
        cpu = [None] * 4
        if cpu_seconds is not None:
            c = np.asarray(cpu_seconds, np.float64) * 1e3
            if c.shape != s.shape:
                raise ValueError(f"cpu_seconds must match seconds, got {c.shape} and {s.shape}")
            cq1, cmed, cq3 = np.percentile(c, [25, 50, 75])
            cpu = [float(cmed), float(cq1), float(cq3), float(c.min())]
        return cls(float(med), float(q1), float(q3), float(s.min()), int(s.size), *cpu)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _check_positive(v, name):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


def _interleaved(its: dict, rounds: int, per_round: int, warmup: int) -> dict:
    """Per-call times of every interpreter, round-robin: each round times ``per_round`` calls of
    each, starting from a different one each round."""
    for it in its.values():
        for _ in range(warmup):
            it.invoke()
    names = list(its)
    samples = {k: ([], []) for k in names}
    wall, cpu = time.perf_counter, time.thread_time
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            invoke, (out, out_cpu) = its[k].invoke, samples[k]
            for _ in range(per_round):
                t0, c0 = wall(), cpu()
                invoke()
                c1, t1 = cpu(), wall()
                out.append(t1 - t0)
                out_cpu.append(c1 - c0)
    return samples


def time_models(models: dict, kernels: str = "default", num_threads: int = 1, rounds: int = 10,
                per_round: int = 20, warmup: int = 3, x=None, seed: int = 0) -> dict:
    """Time several ``.tflite`` models on one machine, interleaved: ``{name: Timing}``.

    Parameters
    ----------
    models : dict
        ``{name: tflite bytes}``.
    kernels : {"default", "optimized", "reference"}
        LiteRT kernel set (:data:`KERNELS`).
    num_threads : int
        CPU threads (1, as LPIRC measured: one big core).
    rounds, per_round, warmup : int
        Each round times ``per_round`` single calls of every model in turn, after ``warmup``
        calls each; medians and quartiles are over all ``rounds * per_round`` calls.
    x : array_like, optional
        One float input (batch of 1) for every model, quantized for int8 inputs; seeded random
        data of the input's type if omitted.

    Examples
    --------
    >>> t = time_models({"int8": example_tflite()}, rounds=2, per_round=5)
    >>> t["int8"].n, t["int8"].median_ms > 0
    (10, True)
    """
    if not isinstance(models, dict) or not models:
        raise ValueError("models must be a non-empty {name: tflite bytes} dict")
    _check_kernels(kernels), _check_threads(num_threads)
    for v, name in ((rounds, "rounds"), (per_round, "per_round")):
        _check_positive(v, name)
    its = {k: _ready(_check_model(b, f"models[{k!r}]"), kernels, num_threads, x, seed) for k, b in models.items()}
    samples = _interleaved(its, rounds, per_round, warmup)
    return {k: Timing.from_samples(w, c if num_threads == 1 else None) for k, (w, c) in samples.items()}


# --- the flatbuffer, one op at a time -----------------------------------------------------------

def _schema():
    return fb.schema()


def _read(tflite_model: bytes):
    return fb.read(tflite_model)


def _write(model_t) -> bytes:
    return fb.write(model_t)


def _text(name) -> str:
    return name.decode("utf-8", "replace") if isinstance(name, (bytes, bytearray)) else str(name or "")


def _layer_name(tensor_name: str, op_type: str, index: int, is_output: bool) -> str:
    """A short layer name from a converter tensor name ``model/layer_1/Op;...``."""
    for chunk in tensor_name.split(";"):
        parts = chunk.split("/")
        if len(parts) >= 2 and parts[1]:
            name = re.sub(r"_\d+$", "", parts[1])
            return re.sub(r"_(relu6?|bn|batchnorm)$", "", name)
    return "output" if is_output else f"{op_type.lower()}_{index}"


def _macs(op_type: str, shapes_in: list, shape_out) -> int:
    """Multiply-accumulates of one op (conv, depthwise, fully connected; 0 for the others)."""
    out = [int(d) for d in shape_out]
    if op_type == "CONV_2D":  # filter (O, kh, kw, I), output (N, H, W, O)
        o, kh, kw, i = shapes_in[1]
        return int(np.prod(out[:3]) * o * kh * kw * i)
    if op_type == "DEPTHWISE_CONV_2D":  # filter (1, kh, kw, C*M), output (N, H, W, C*M)
        _, kh, kw, cm = shapes_in[1]
        return int(np.prod(out[:3]) * cm * kh * kw)
    if op_type == "FULLY_CONNECTED":  # filter (O, I)
        o, i = shapes_in[1]
        return int(np.prod(out) // o * o * i)
    return 0


@dataclass(frozen=True, eq=False)
class OpModel:
    """One op of a model (with a PAD before it when ``fused``), cut out into its own ``.tflite``:
    its type, layer, MACs and bytes.

    ``inputs`` are the parent model's tensor indices that feed it (constants excluded), in the
    order of the cut-out model's inputs; ``fused`` names the ops folded in before it.
    """

    index: int
    op_type: str
    name: str
    macs: int
    tflite: bytes
    inputs: tuple
    fused: tuple = ()

    def __repr__(self) -> str:
        fused = f" (with {', '.join(self.fused)} before it)" if self.fused else ""
        return (f"OpModel({self.index}: {self.op_type} {self.name!r}{fused}, {self.macs:,} MACs, "
                f"{len(self.tflite):,} bytes)")


#: Ops that a delegate folds into the convolution they feed (XNNPACK folds explicit padding).
_FOLDED_INTO_CONV = {"PAD"}
_CONVS = {"CONV_2D", "DEPTHWISE_CONV_2D"}


def op_models(tflite_model: bytes, fuse_pad: bool = False) -> list:
    """Every op of the main subgraph as its own single-op ``.tflite`` (:class:`OpModel`).

    Each single-op model keeps the op exactly as stored (options, operator code and version),
    its tensors (types, shapes, quantization) and its constant buffers; its inputs are the op's
    non-constant inputs. With ``fuse_pad``, a PAD whose output feeds only a convolution is cut
    out together with it, as one two-op model reported as the convolution: the XNNPACK delegate
    (LiteRT's default kernels) folds such a PAD into the convolution, so in the whole model it
    costs nothing of its own.

    Examples
    --------
    >>> ops = op_models(example_tflite())
    >>> [(o.op_type, o.name) for o in ops]
    [('CONV_2D', 'conv'), ('PAD', 'pad'), ('DEPTHWISE_CONV_2D', 'dw'), ('CONV_2D', 'pw'), ('MEAN', 'pool'), ('FULLY_CONNECTED', 'output')]
    >>> ops[2].macs == 8 * 8 * 16 * 3 * 3
    True
    >>> op_models(example_tflite(), fuse_pad=True)[1]
    OpModel(2: DEPTHWISE_CONV_2D 'dw' (with PAD before it), 9,216 MACs, ... bytes)
    """
    s = _schema()
    model = _read(_check_model(tflite_model))
    if not model.subgraphs:
        raise ValueError("tflite_model has no subgraph")
    g = model.subgraphs[0]
    buffers = model.buffers or []
    operators = list(g.operators or [])

    def constant(i):
        b = g.tensors[i].buffer
        return 0 < b < len(buffers) and buffers[b] is not None and buffers[b].data is not None and len(buffers[b].data) > 0

    def op_type(op):
        return fb.op_name(model, op.opcodeIndex)

    graph_outputs = set(int(i) for i in (g.outputs if g.outputs is not None else []))
    consumers: dict = {}
    for k, op in enumerate(operators):
        for i in op.inputs:
            consumers.setdefault(int(i), []).append(k)
    groups, folded = [], set()
    for k, op in enumerate(operators):
        if k in folded:
            continue
        nxt = consumers.get(int(op.outputs[0]), [])
        if (fuse_pad and op_type(op) in _FOLDED_INTO_CONV and len(nxt) == 1 and op_type(operators[nxt[0]]) in _CONVS
                and int(op.outputs[0]) not in graph_outputs):
            groups.append([k, nxt[0]])
            folded.add(nxt[0])
        else:
            groups.append([k])
    groups.sort(key=lambda grp: grp[-1])
    out = []
    for grp in groups:
        ops = [operators[k] for k in grp]
        produced = {int(i) for op in ops for i in op.outputs}
        tensors, new_buffers, remap = [], [s.BufferT()], {}

        def add(i):
            i = int(i)
            if i < 0:
                return -1
            if i not in remap:
                t = copy.copy(g.tensors[i])
                new_buffers.append(buffers[t.buffer] if constant(i) else s.BufferT())
                t.buffer = len(new_buffers) - 1
                remap[i] = len(tensors)
                tensors.append(t)
            return remap[i]

        feeds, new_ops = [], []
        for op in ops:
            for i in op.inputs:
                i = int(i)
                if i >= 0 and i not in produced and not constant(i) and i not in feeds:
                    feeds.append(i)
            single = copy.copy(op)
            single.inputs = [add(i) for i in op.inputs]
            single.outputs = [add(i) for i in op.outputs]
            new_ops.append(single)
        last = ops[-1]
        k = grp[-1]
        sub = s.SubGraphT(tensors=tensors, inputs=[remap[i] for i in feeds], outputs=list(new_ops[-1].outputs),
                          operators=new_ops, name=f"op{k}")
        m = s.ModelT(version=model.version, operatorCodes=model.operatorCodes, subgraphs=[sub],
                     description=f"op {k} of a larger model", buffers=new_buffers)
        first_out = int(last.outputs[0])
        t = op_type(last)
        shapes_in = [list(g.tensors[int(i)].shape) if i >= 0 else [] for i in last.inputs]
        out.append(OpModel(k, t, _layer_name(_text(g.tensors[first_out].name), t, k, first_out in graph_outputs),
                           _macs(t, shapes_in, g.tensors[first_out].shape), _write(m), tuple(feeds),
                           tuple(op_type(operators[j]) for j in grp[:-1])))
    return out


def _noop_model() -> bytes:
    """A one-element float RELU: what one ``invoke()`` costs when the op itself costs nothing."""
    s = _schema()
    t_in = s.TensorT()
    t_in.shape, t_in.type, t_in.buffer, t_in.name = [1], s.TensorType.FLOAT32, 1, "x"
    t_out = copy.copy(t_in)
    t_out.buffer, t_out.name = 2, "y"
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.RELU
    sub = s.SubGraphT(tensors=[t_in, t_out], inputs=[0], outputs=[1], operators=[op], name="noop")
    return _write(s.ModelT(version=3, operatorCodes=[code], subgraphs=[sub], description="one-element RELU",
                           buffers=[s.BufferT(), s.BufferT(), s.BufferT()]))


# --- the per-op profile -------------------------------------------------------------------------

@dataclass(frozen=True)
class OpTime:
    """One op's time in a :class:`Profile`, in ms, with the per-call overhead taken off: ``ms``
    (median wall clock), ``min_ms`` (fastest pass), ``cpu_ms`` (median CPU time of the thread);
    ``raw_ms`` is the median wall clock as measured."""

    index: int
    op_type: str
    name: str
    macs: int
    ms: float
    raw_ms: float
    min_ms: float
    cpu_ms: float | None = None

    @property
    def ms_per_mmac(self) -> float | None:
        """Milliseconds (median) per million MACs (None for ops without MACs)."""
        return self.ms / (self.macs / 1e6) if self.macs else None


@dataclass(frozen=True, eq=False)
class Profile:
    """Per-op times of one model, measured op by op, and the whole model's time.

    The check that the ops add up compares like with like, pass by pass: in each pass the ops'
    times (less the per-call overhead, counted once) sum to one pass total, which spans about as
    long as the whole model's call in that pass and so is as exposed to whatever else the
    machine does. ``passes`` holds those totals; ``total_ms`` is their median, ``ratio`` its
    quotient by the whole model's median (wall clock), ``ratio_cpu`` the same in the thread's CPU
    time, ``ratio_min`` with the fastest pass of each. (Comparing the sum of the ops' own medians,
    ``sum_ms``, with the whole model's median is biased on a busy machine: a short op call is
    seldom interrupted, a whole-model call often.) The per-op rows, shares and per-type totals use
    each op's median, overhead taken off.
    """

    ops: tuple
    whole: Timing
    overhead: Timing
    kernels: str
    num_threads: int
    passes: Timing

    @property
    def whole_ms(self) -> float:
        return self.whole.median_ms

    @property
    def overhead_ms(self) -> float:
        return self.overhead.median_ms

    @property
    def sum_ms(self) -> float:
        """One call's overhead plus the ops' medians (overhead taken off)."""
        return self.overhead_ms + sum(o.ms for o in self.ops)

    @property
    def total_ms(self) -> float:
        """Median over the passes of the ops' summed times (overhead counted once)."""
        return self.passes.median_ms

    @property
    def ratio(self) -> float:
        return self.total_ms / self.whole_ms

    @property
    def ratio_min(self) -> float:
        return self.passes.min_ms / self.whole.min_ms

    @property
    def total_cpu_ms(self) -> float | None:
        return self.passes.cpu_median_ms

    @property
    def ratio_cpu(self) -> float | None:
        return None if self.total_cpu_ms is None else self.total_cpu_ms / self.whole.cpu_median_ms

    def __repr__(self) -> str:
        return (f"Profile({len(self.ops)} ops, {self.kernels} kernels, {self.num_threads} thread(s): ops sum to "
                f"{self.total_ms:.3f} ms, whole model {self.whole_ms:.3f} ms, ratio {self.ratio:.2f}"
                + ("" if self.ratio_cpu is None else f"; in CPU time {self.ratio_cpu:.2f}") + ")")

    def records(self) -> list:
        """One dict per op: index, type, layer name, MACs, ``ms`` (wall clock), ``min_ms``, ``cpu_ms``,
        ``raw_ms``, share of the ops' time and ms per million MACs (both from ``ms``)."""
        return self._records(False)

    def _records(self, use_cpu: bool) -> list:
        t = [(o.cpu_ms if use_cpu else o.ms) for o in self.ops]
        total = sum(t) or 1.0
        return [dict(index=o.index, op_type=o.op_type, name=o.name, macs=o.macs, ms=ms, wall_ms=o.ms, min_ms=o.min_ms,
                     cpu_ms=o.cpu_ms, raw_ms=o.raw_ms, share=ms / total,
                     ms_per_mmac=ms / (o.macs / 1e6) if o.macs else None) for o, ms in zip(self.ops, t)]

    def cpu_records(self) -> list:
        """:meth:`records` with the thread's CPU time as ``ms`` (single thread only)."""
        if self.ratio_cpu is None:
            raise ValueError("no CPU times: they are measured with num_threads=1 only")
        return self._records(True)

    def by_type(self, use_cpu: bool = False) -> list:
        """Totals by op type, largest first: count, ms, share, MACs, ms per million MACs."""
        return _totals_by_type(self.cpu_records() if use_cpu else self.records())


def _totals_by_type(rows: list) -> list:
    """Sum per-op rows (``op_type``, ``ms``, optional ``macs``) by op type, largest time first."""
    out: dict = {}
    for r in rows:
        t = out.setdefault(r["op_type"], dict(op_type=r["op_type"], count=0, ms=0.0, macs=0))
        t["count"] += 1
        t["ms"] += float(r["ms"])
        t["macs"] += int(r.get("macs") or 0)
    total = sum(t["ms"] for t in out.values()) or 1.0
    for t in out.values():
        t["share"] = t["ms"] / total
        t["ms_per_mmac"] = t["ms"] / (t["macs"] / 1e6) if t["macs"] else None
    return sorted(out.values(), key=lambda t: -t["ms"])


def _intermediates(tflite_model: bytes, num_threads: int, x, seed: int) -> dict:
    """Every tensor of one run of the whole model (optimized kernels, no delegate, so all are readable)."""
    it = _interpreter(tflite_model, "optimized", num_threads, preserve_all_tensors=True)
    rng = np.random.default_rng(seed)
    for d in it.get_input_details():
        it.set_tensor(d["index"], _input_array(d, x, rng))
    it.invoke()
    out = {}
    for d in it.get_tensor_details():
        with contextlib.suppress(ValueError):
            out[d["index"]] = np.array(it.get_tensor(d["index"]))
    return out


def _passes(its: dict, passes: int, warmup: int) -> dict:
    """Per-call times of every interpreter, in passes: each pass calls every one once, in order
    (the whole model, the ops in the model's order, so that each op finds the caches as the ops
    before it left them, then the no-op, so that it too follows a small op and not the whole
    model, whose call leaves the caches cold: measured right after it, the no-op took twice as
    long as after the last op, more than some int8 ops of the small networks).

    Before each call (untimed) its inputs are written again, as the op before it writes them
    in the whole model (and an app writes the image before each call): the call finds its inputs
    in the cache, not where the previous pass left them. Without this the float ops of the
    ImageNet network, whose inputs are megabytes, summed to 1.3 times the whole model."""
    for it in its.values():
        for _ in range(warmup):
            it.invoke()
    samples = {k: ([], []) for k in its}
    calls = []
    for k, it in its.items():
        feeds = [(d["index"], np.array(it.get_tensor(d["index"])))
                 for d in it.get_input_details()]
        calls.append((samples[k][0], samples[k][1], it.invoke, it.set_tensor, feeds))
    wall, cpu = time.perf_counter, time.thread_time
    for _ in range(passes):
        for out, out_cpu, invoke, set_tensor, feeds in calls:
            for index, value in feeds:
                set_tensor(index, value)
            t0, c0 = wall(), cpu()
            invoke()
            c1, t1 = cpu(), wall()
            out.append(t1 - t0)
            out_cpu.append(c1 - c0)
    return samples


def profile_ops(tflite_model: bytes, kernels: str = "default", num_threads: int = 1, passes: int = 100,
                warmup: int = 3, x=None, seed: int = 0, fuse_pad: bool | None = None) -> Profile:
    """Time every op of a model on its own, with LiteRT's kernels, beside the whole model.

    Every op runs as a single-op model (:func:`op_models`) on the tensors it sees in the whole
    model (taken from one run of the whole model). Each of ``passes`` passes calls the whole
    model once, every op once in the model's order, and a one-element no-op model once; medians
    are over the passes (and the fastest pass is kept too). The no-op's time, the cost of one
    ``invoke()`` call, is taken off every op (never below zero) and counted once in
    :attr:`Profile.total_ms`. ``fuse_pad`` (default: only with the default kernels, whose XNNPACK
    delegate folds explicit padding into convolutions) times a PAD together with the convolution
    it feeds (:func:`op_models`).

    Examples
    --------
    >>> p = profile_ops(example_tflite(), passes=20)
    >>> [o.op_type for o in p.ops][:3], p.ratio > 0           # the PAD timed with the depthwise conv
    (['CONV_2D', 'DEPTHWISE_CONV_2D', 'CONV_2D'], True)
    """
    tflite_model = _check_model(tflite_model)
    _check_kernels(kernels), _check_threads(num_threads)
    _check_positive(passes, "passes")
    ops = op_models(tflite_model, fuse_pad=kernels == "default" if fuse_pad is None else fuse_pad)
    values = _intermediates(tflite_model, num_threads, x, seed)
    its = {"whole": _ready(tflite_model, kernels, num_threads, x, seed)}
    for o in ops:
        its[o.index] = _ready(o.tflite, kernels, num_threads, seed=seed, inputs=[values[i] for i in o.inputs])
    its["noop"] = _ready(_noop_model(), kernels, num_threads, seed=seed)
    samples = _passes(its, passes, warmup)
    t = {k: Timing.from_samples(w, c if num_threads == 1 else None) for k, (w, c) in samples.items()}
    noop = t["noop"]
    # each pass: the ops' calls, less one call's overhead each, plus one overhead
    n = len(ops)
    pass_wall = np.sum([samples[o.index][0] for o in ops], axis=0) - (n - 1) * noop.median_ms / 1e3
    pass_cpu = (np.sum([samples[o.index][1] for o in ops], axis=0) - (n - 1) * noop.cpu_median_ms / 1e3
                if num_threads == 1 else None)

    def net(a, b):
        return None if a is None or b is None else max(a - b, 0.0)

    rows = tuple(OpTime(o.index, o.op_type, o.name, o.macs, net(t[o.index].median_ms, noop.median_ms),
                        t[o.index].median_ms, net(t[o.index].min_ms, noop.min_ms),
                        net(t[o.index].cpu_median_ms, noop.cpu_median_ms)) for o in ops)
    return Profile(rows, t["whole"], noop, kernels, num_threads, Timing.from_samples(pass_wall, pass_cpu))


# --- benchmark_model's output ---------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class BenchmarkOutput:
    """What LiteRT's ``benchmark_model`` printed, parsed.

    ``avg_us`` is the whole model's average time per run in microseconds; ``timings`` the
    whole ``count= first= ... avg= std=`` line; ``ops`` one dict per op of the "Run Order" table
    (``node_type``, ``name``, ``avg_ms``, ``first_ms``, ``share`` of the ops' total, and the tool's
    own ``reported_percent``); ``by_type`` the totals by node type computed from ``ops``
    (with the tool's ``reported_avg_ms`` beside them).
    """

    avg_us: float
    timings: dict
    ops: list
    by_type: list
    inference_us: dict

    @property
    def ops_ms(self) -> float:
        """The ops' average times, summed."""
        return float(sum(o["avg_ms"] for o in self.ops))

    def __repr__(self) -> str:
        return (f"BenchmarkOutput(whole model {self.avg_us / 1000:.3f} ms average over {self.timings.get('count')} "
                f"runs, {len(self.ops)} ops summing to {self.ops_ms:.3f} ms, {len(self.by_type)} node types)")


_TIMINGS = re.compile(r"count=(\d+)((?:\s+\w+=[-\d.]+)+)")
_SECTION = re.compile(r"=+\s*([A-Za-z][A-Za-z ]+?)\s*=+\s*$")


def _number(v: str):
    v = v.strip().rstrip("%")
    try:
        f = float(v)
    except ValueError:
        return None
    return int(f) if re.fullmatch(r"-?\d+", v) else f


def _table(lines: list, start: int) -> tuple[list, list, int]:
    """Header columns and rows of a tab-separated table starting after line ``start``."""
    header = [c.strip().strip("[]").strip() for c in lines[start + 1].split("\t") if c.strip()]
    rows, i = [], start + 2
    while i < len(lines) and lines[i].strip() and not _SECTION.search(lines[i]):
        cells = [c.strip() for c in lines[i].split("\t")]
        cells = [c for c in cells if c != ""]
        if len(cells) >= len(header) - 1:
            rows.append(dict(zip(header, cells)))
        i += 1
    return header, rows, i


def _sections(lines: list) -> dict:
    """``{section title: [line index, ...]}`` of every ``==== Title ====`` line."""
    out: dict = {}
    for i, line in enumerate(lines):
        m = _SECTION.search(line)
        if m:
            out.setdefault(m.group(1).strip(), []).append(i)
    return out


def parse_benchmark_model(text: str) -> BenchmarkOutput:
    """Parse the output of ``benchmark_model --enable_op_profiling=true`` (LiteRT/TFLite).

    Reads the "Run Order" table (one row per op; columns found from its header, so builds with
    and without the ``[start]`` column both parse), the "Summary by node type" table, and the
    whole-model ``Timings (microseconds): count=... avg=...`` line. When the output holds several
    profiles (newer builds print one for initialization first), the last one is used. The tool's
    percentage columns are kept as ``reported_*``; shares and per-type totals are computed from
    the per-op average times.

    Parameters
    ----------
    text : str
        What the tool printed (stdout and stderr together are fine: other lines are skipped).

    Returns
    -------
    BenchmarkOutput

    Examples
    --------
    >>> out = parse_benchmark_model(published_sample())
    >>> out
    BenchmarkOutput(whole model 79.732 ms average over 50 runs, 31 ops summing to 79.449 ms, 5 node types)
    >>> out.ops[0]["node_type"], out.ops[0]["name"], out.ops[0]["avg_ms"]
    ('CONV_2D', 'MobilenetV1/MobilenetV1/Conv2d_0/Relu6', 4.269)
    >>> [(t["node_type"], t["count"], round(t["share"], 3)) for t in out.by_type][:2]
    [('CONV_2D', 15, 0.89), ('DEPTHWISE_CONV_2D', 13, 0.109)]
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be the tool's output as a str, got {type(text).__name__}")
    lines = [re.sub(r"^(INFO|WARNING|VERBOSE|ERROR): (\[[^\]]*\] )?", "", ln.rstrip("\r")) for ln in text.splitlines()]
    sections = _sections(lines)
    if "Run Order" not in sections:
        raise ValueError("no 'Run Order' table in the text: it is not benchmark_model op-profiling output; run the "
                         "tool with --enable_op_profiling=true (the LiteRT CompiledModel binary: --use_profiler=true)")
    run_at = sections["Run Order"][-1]
    _, rows, end = _table(lines, run_at)
    if not rows:
        raise ValueError("the 'Run Order' table has no rows; the output is truncated")
    ops = []
    for r in rows:
        name = r.get("Name", "")
        ops.append(dict(node_type=r.get("node type", ""), name=name[1:-1] if name.startswith("[") and name.endswith("]")
                        else name, avg_ms=float(_number(r.get("avg ms", "nan"))), first_ms=_number(r.get("first", "")),
                        reported_percent=_number(r.get("%", "")), times_called=_number(r.get("times called", ""))))
    total = sum(o["avg_ms"] for o in ops) or 1.0
    for o in ops:
        o["share"] = o["avg_ms"] / total
    reported = {}
    for at in sections.get("Summary by node type", []):
        if at > run_at:
            _, trows, _ = _table(lines, at)
            reported = {r.get("Node type", ""): r for r in trows}
            break
    by_type = _totals_by_type([dict(op_type=o["node_type"], ms=o["avg_ms"]) for o in ops])
    by_type = [dict(node_type=t["op_type"], count=t["count"], avg_ms=t["ms"], share=t["share"],
                    reported_avg_ms=_number(reported.get(t["op_type"], {}).get("avg ms", "")),
                    reported_percent=_number(reported.get(t["op_type"], {}).get("avg %", ""))) for t in by_type]
    timings = {}
    for line in lines[end:]:
        m = _TIMINGS.search(line)
        if m and "Timings" in line:
            timings = {"count": int(m.group(1))}
            timings.update({k: _number(v) for k, v in re.findall(r"(\w+)=([-\d.]+)", m.group(2))})
            break
    if "avg" not in timings:
        raise ValueError("no whole-model 'Timings (microseconds): count=... avg=...' line after the profile; "
                         "the output is truncated")
    inference = {}
    m = re.search(r"inference timings in us: (.*)", text, flags=re.I)
    if m:
        inference = {k.strip(): _number(v) for k, v in re.findall(r"([\w ()]+?):\s*([-\d.]+)", m.group(1))}
    return BenchmarkOutput(float(timings["avg"]), timings, ops, by_type, inference)


def published_sample() -> str:
    """The real ``benchmark_model`` op-profiling output from the tool's README (MobileNet v1
    quantized; provenance in ``data/benchmark_model/README.md``), checked by sha256.

    Examples
    --------
    >>> published_sample().splitlines()[1]
    '============================== Run Order =============================='
    """
    return verified_bytes(SAMPLE_PATH, _SAMPLE_SHA256, "the benchmark_model sample output").decode("utf-8")


# --- the machine ------------------------------------------------------------------------------------

def host_info() -> dict:
    """What the timings ran on: CPU model, core count, int8 dot-product instructions, load, versions.

    Examples
    --------
    >>> sorted(host_info())[:4]
    ['cpu', 'cpu_count', 'int8_dot_product', 'litert']
    """
    cpu, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    versions = {}
    for pkg, module in (("litert", "ai_edge_litert"), ("tensorflow", "tensorflow")):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[pkg] = version("ai-edge-litert" if pkg == "litert" else pkg)
    dot = sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm", "svei8mm"})
    return dict(cpu=cpu, cpu_count=os.cpu_count(), int8_dot_product=dot, loadavg=[round(v, 2) for v in os.getloadavg()],
                machine=platform.machine(), python=platform.python_version(), **versions)


# --- a tiny model for the examples ---------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def example_keras():
    """A tiny seeded Keras model (conv, pad, depthwise, pointwise, pool, dense; 16x16x3 in, 4 out)
    for the examples and tests. Cached: every call returns the same model.

    Examples
    --------
    >>> m = example_keras()
    >>> m.input_shape, m.output_shape, [l.name for l in m.layers][1:4]
    ((None, 16, 16, 3), (None, 4), ['conv', 'pad', 'dw'])
    """
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv")(inp)
    h = keras.layers.ZeroPadding2D(1, name="pad")(h)
    h = keras.layers.DepthwiseConv2D(3, strides=2, name="dw")(h)
    h = keras.layers.Conv2D(32, 1, activation="relu", name="pw")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inp, keras.layers.Dense(4, name="fc")(h), name="tiny")


@functools.lru_cache(maxsize=None)
def example_tflite() -> bytes:
    """:func:`example_keras` as an int8 ``.tflite`` (TFLite's converter, calibrated on 8 seeded
    random inputs) for the examples and tests. Cached: every call returns the same bytes.

    Examples
    --------
    >>> from qlib.flatbuffer import graph
    >>> sorted({op.name for op in graph(example_tflite()).ops})[:3]
    ['CONV_2D', 'DEPTHWISE_CONV_2D', 'FULLY_CONNECTED']
    """
    from .tflite import convert_int8

    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(np.float32)
    return convert_int8(example_keras(), x)

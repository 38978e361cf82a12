"""qlib.export: the .tflite carries qlib's grids, read back tensor by tensor and checked against an
independent computation (qlib.layers.quantize_kernel on the float kernels, the FakeQuant grids)."""

import keras
import numpy as np
import pytest

from qlib import export, flatbuffer
from qlib.dfq import dfq
from qlib.layers import kind, quantize_kernel, to_tflite_layout
from qlib.quantizers import round_half_away
from qlib.ranges import greedy_search
from qlib.simulate import FakeQuant, Simulator, quantize_model

KINDS = {"CONV_2D": "conv2d", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "dense"}


def _model():
    """conv -> ReLU -> depthwise (multiplier 2) -> ReLU6 -> pool -> dense, with awkward channels."""
    keras.utils.set_random_seed(11)
    inp = keras.Input((10, 10, 3), name="image")
    x = keras.layers.ReLU(name="conv_relu")(keras.layers.Conv2D(6, 3, padding="same", name="conv")(inp))
    x = keras.layers.ReLU(6.0, name="dw_relu6")(keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x))
    out = keras.layers.Dense(4, name="fc")(keras.layers.GlobalAveragePooling2D(name="pool")(x))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    for name in ("conv", "dw", "fc"):
        layer = model.get_layer(name)
        k, b = layer.get_weights()
        k = k * np.logspace(-2, 0, k.shape[-1]).reshape((1,) * (k.ndim - 1) + (-1,))  # channels 100x apart
        layer.set_weights([k, rng.normal(0, 0.3, b.shape).astype(np.float32)])
    k = model.get_layer("conv").get_weights()
    k[0][..., 2] = 0.0  # a dead channel
    model.get_layer("conv").set_weights(k)
    return model


def _read_back(tfl):
    """{op kind: (weight tensor, bias tensor, input tensor, output tensor)} straight from the flatbuffer."""
    g = flatbuffer.graph(tfl)
    return {KINDS[op.name]: [g.tensors[i] for i in (op.inputs[1], op.inputs[2], op.inputs[0], op.outputs[0])]
            for op in g.ops if op.name in KINDS}, g


@pytest.fixture(scope="module")
def calib():
    return np.random.default_rng(1).normal(size=(32, 10, 10, 3)).astype(np.float32)


@pytest.mark.parametrize("bits,per_channel", [(8, False), (8, True), (3, True)])
def test_weights_biases_activations_read_back_as_qlib_computes_them(calib, bits, per_channel):
    model = _model()
    q = quantize_model(model, bits, 8, per_channel=per_channel, calibration_data=calib)
    tfl = export.to_tflite(q, bits, per_channel)
    ops, g = _read_back(tfl)
    fq = {l.name: (np.float32(l.scale.numpy()), int(round(float(l.zero_point.numpy())))) for l in q.layers
          if isinstance(l, FakeQuant)}
    # activations: the FakeQuant grids, in the file
    x_t = g.tensors[g.inputs[0]]
    assert x_t.dtype == np.int8 and (x_t.scale[0], x_t.zero_point[0]) == fq["image_fq"]
    for name, point in (("conv2d", "conv_relu_fq"), ("depthwise", "dw_relu6_fq"), ("dense", "fc_fq")):
        out = ops[name][3]
        assert abs(out.scale[0] / fq[point][0] - 1) <= 1e-6 and out.zero_point[0] == fq[point][1], name
    assert abs(ops["dense"][2].scale[0] / fq["pool_fq"][0] - 1) <= 1e-6
    # weights and biases: qlib's grid on the float kernels, independently
    inputs = {"conv2d": fq["image_fq"][0], "depthwise": fq["conv_relu_fq"][0], "dense": fq["pool_fq"][0]}
    for name, layer_name in (("conv2d", "conv"), ("depthwise", "dw"), ("dense", "fc")):
        layer = model.get_layer(layer_name)
        k, b = layer.get_weights()
        _, p = quantize_kernel(layer, k, bits, per_channel)
        flat = p.quantize(k.reshape(k.shape[:2] + (-1,)) if kind(layer) == "depthwise" else k)
        ints = to_tflite_layout(kind(layer), flat.reshape(k.shape))
        w, bias = ops[name][0], ops[name][1]
        assert w.dtype == np.int8 and np.array_equal(w.data, ints), name
        assert np.all(np.abs(w.data) <= 2 ** (bits - 1) - 1)
        scales = np.broadcast_to(p.scale, w.scale.shape)
        np.testing.assert_allclose(w.scale, scales, rtol=1e-6)
        assert w.scale.size == (ints.shape[w.axis] if per_channel else w.scale.size) and np.all(w.zero_point == 0)
        if per_channel:
            assert w.axis == {"conv2d": 0, "depthwise": 3, "dense": 0}[name]
        s_b = np.float64(inputs[name]) * np.asarray(p.scale, np.float64)
        assert bias.dtype == np.int32 and np.array_equal(bias.data, round_half_away(b / s_b).astype(np.int32)), name


def test_zoo_model_every_tensor_on_qlibs_grid():
    """The book's export of a zoo model (qlib.export.zoo: one validation image per class)."""
    e = export.zoo("v1_friendly", 8, True)
    assert e.rewritten == [] and len(e.rows) == 28 + 15 + 34  # 28 kernels, 15 biases (BN-folded), activations
    assert all(export.on_grid(r) for r in e.rows)
    # and independently: every kernel of the folded float model, quantized by qlib.layers
    from qlib.folding import fold_batchnorm
    from qlib.zoo import load_model

    folded = fold_batchnorm(load_model("v1_friendly"), warn_if_none=False)
    g = flatbuffer.graph(e.tflite)
    weights = {r["layer"]: g.tensors[r["index"]] for r in e.rows if r["role"] == "weight"}
    checked = 0
    for layer in folded.layers:
        if layer.name in weights:
            k = layer.get_weights()[0]
            _, p = quantize_kernel(layer, k, 8, True)
            flat = p.quantize(k.reshape(k.shape[:2] + (-1,)) if kind(layer) == "depthwise" else k)
            assert np.array_equal(weights[layer.name].data, to_tflite_layout(kind(layer), flat.reshape(k.shape)))
            np.testing.assert_allclose(weights[layer.name].scale, p.scale, rtol=1e-6)
            checked += 1
    assert checked == 28


def test_dfq_output_greedy_ranges_and_low_bits(calib):
    """DFQ's model, greedy-search activation ranges, 4-bit per-tensor weights: every tensor on qlib's grid."""
    from factories import conv_bn_relu

    model = conv_bn_relu(seed=2)
    m, _ = dfq(model, weight_bits=4)
    x = np.random.default_rng(3).normal(size=(16, 12, 12, 3)).astype(np.float32)
    q = Simulator(m, x).quantize(4, 8, per_channel=False, activation_range_setter=greedy_search,
                                 setter_name="greedy")
    e = export.export(q)  # bits and per-channel inferred from the kernels
    assert (e.weight_bits, e.per_channel) == (4, False)
    assert e.rewritten and all(export.on_grid(r) for r in export.compare(e.tflite, q, 4, False))
    w = [flatbuffer.graph(e.tflite).tensors[r["index"]] for r in e.rows if r["role"] == "weight"]
    assert all(t.dtype == np.int8 and t.scale.size in (1, t.shape[0]) and np.abs(t.data).max() == 7 for t in w)


def test_int8_io_false_has_float_edges(calib):
    q = quantize_model(_model(), 8, 8, per_channel=True, calibration_data=calib)
    g = flatbuffer.graph(export.to_tflite(q, int8_io=False))
    assert g.ops[0].name == "QUANTIZE" and g.ops[-1].name == "DEQUANTIZE"
    assert g.tensors[g.inputs[0]].dtype == np.float32


def test_settings_that_cannot_be_exported_are_named(calib):
    model = _model()
    with pytest.raises(ValueError, match="only activation_bits=8 can be exported"):
        export.to_tflite(quantize_model(model, 8, 4, calibration_data=calib))
    with pytest.raises(ValueError, match="weight_bits must be in 2..8"):
        export.to_tflite(quantize_model(model, 12, 8, calibration_data=calib), weight_bits=12)
    with pytest.raises(ValueError, match="kernel of layer 'conv' is not on"):
        export.to_tflite(quantize_model(model, None, 8, calibration_data=calib))  # float weights
    with pytest.raises(ValueError, match="kernel of layer 'conv' is not on a symmetric 8-bit per-tensor grid"):
        export.to_tflite(quantize_model(model, 4, 8, per_channel=True, calibration_data=calib), 8, False)
    with pytest.raises(ValueError, match="bias of layer 'conv' is not on its int32 grid"):
        export.to_tflite(quantize_model(model, 8, 8, quantize_bias=False, calibration_data=calib), 8, False)
    with pytest.raises(ValueError, match="no FakeQuant layers"):
        export.to_tflite(model)


def test_unsupported_layers_are_named():
    inp = keras.Input((8, 8, 2), name="image")
    x = keras.layers.Conv2D(3, 3, name="conv")(inp)
    pooled = keras.Model(inp, keras.layers.AveragePooling2D(2, name="avg")(x))
    calib = np.random.default_rng(0).normal(size=(8, 8, 8, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="'avg' \\(AveragePooling2D\\).*round twice"):
        export.to_tflite(quantize_model(pooled, 8, 8, calibration_data=calib))
    fq = FakeQuant(8, name="image_fq")
    up = keras.layers.UpSampling2D(name="up")(keras.layers.Conv2D(3, 3, name="conv")(fq(inp)))
    odd = keras.Model(inp, FakeQuant(8, name="up_fq")(up))
    with pytest.raises(ValueError, match="'up' \\(UpSampling2D\\) cannot be exported"):
        export.to_tflite(odd)


def test_activations_tflite_cannot_fuse_are_named():
    """Activations the simulator refuses too; built by hand around FakeQuant layers to reach the export's check."""
    for act, words in ((keras.layers.Activation("tanh", name="act"), "'act': activation 'tanh' cannot be exported"),
                       (keras.layers.ReLU(negative_slope=0.1, name="act"), "'act': ReLU with .*negative_slope=0.1"),
                       (keras.layers.ReLU(4.0, name="act"), "'act': ReLU with max_value=4.0"),
                       (None, "'conv': inline activation 'sigmoid' cannot be exported")):
        inp = keras.Input((8, 8, 2), name="image")
        conv = keras.layers.Conv2D(3, 3, activation="sigmoid" if act is None else None, name="conv")
        h = conv(FakeQuant(8, name="image_fq")(inp))
        m = keras.Model(inp, FakeQuant(8, name="out_fq")(h if act is None else act(h)))
        with pytest.raises(ValueError, match=words):
            export.to_tflite(m)

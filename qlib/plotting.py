"""The book's figures: one function per figure, plotly, working in the static HTML.

Interactive controls in the rendered book are plotly's own sliders and dropdowns over
precomputed sweeps (no kernel needed). :func:`setup_book` selects plotly's own mime type, which JupyterLab renders
live and the ``qlib._mystnb`` plugin renders in the HTML book.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from .quantizers import compute_params, fit_params, integer_range

__all__ = ["COLORS", "setup_book", "add_steps", "quantization_grid_figure", "channel_ranges_figure",
           "levels_used_figure", "score_figure", "block_diagram", "top_k_figure", "layer_ranges_figure",
           "epsilon_figure", "range_loss_figure", "histogram_figure", "scatter_figure", "channel_boxes_figure",
           "per_layer_figure", "agreement_vs_bits_figure", "dead_channels_figure", "accuracy_vs_bits_figure"]

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def setup_book() -> None:
    """Show figures with plotly's own mime type (rendered by JupyterLab live, and by the
    ``qlib._mystnb`` plugin in the HTML book), on a plain white template.

    Examples
    --------
    >>> setup_book()
    >>> pio.renderers.default
    'plotly_mimetype'
    """
    pio.renderers.default = "plotly_mimetype"
    pio.templates.default = "plotly_white"


def quantization_grid_figure(x, bits=range(2, 9), symmetric: bool = False, title: str = "") -> go.Figure:
    """Slider over bit width: the quantizer's staircase over ``x``'s range, and each value's error.

    Left: real value in, real value out (``fake_quant``), with the values of ``x`` marked.
    Right: the error ``fake_quant(x) - x`` of every value against the value, with the
    ``+-scale/2`` bound dashed. Each slider step is one bit width, all precomputed.

    Examples
    --------
    >>> fig = quantization_grid_figure(np.linspace(-1, 1, 50), bits=[2, 3])
    >>> len(fig.data), len(fig.layout.sliders[0].steps)
    (8, 2)
    """
    x = np.sort(np.ravel(np.asarray(x, np.float64)))
    bits = list(bits)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("quantizer: x -> fake_quant(x)",
                                                        "error of each value"))
    line = np.linspace(x.min(), x.max(), 2000)
    per_step = 4
    for b in bits:
        p = fit_params(x, b, symmetric)
        err = p.fake_quant(x) - x
        half = float(p.scale) / 2
        fig.add_trace(go.Scatter(x=line, y=p.fake_quant(line), mode="lines", name=f"{b}-bit staircase",
                                 line=dict(color=COLORS[0])), 1, 1)
        fig.add_trace(go.Scatter(x=x, y=p.fake_quant(x), mode="markers", name="the tensor's values",
                                 marker=dict(size=4, color=COLORS[1])), 1, 1)
        fig.add_trace(go.Scatter(x=x, y=err, mode="markers", name="error", showlegend=False,
                                 marker=dict(size=4, color=COLORS[1])), 1, 2)
        fig.add_trace(go.Scatter(x=[x.min(), x.max(), None, x.min(), x.max()],
                                 y=[half, half, None, -half, -half], mode="lines",
                                 name="+-scale/2", line=dict(dash="dash", color="gray")), 1, 2)
    titles = [f"{title}{b} bits: {2 ** b} levels, scale = {float(fit_params(x, b, symmetric).scale):.3g}"
              for b in bits]
    add_steps(fig, _groups(len(bits), per_step, bits), "slider", "num_bits = ", titles, active=len(bits) - 1,
              pad=dict(t=40))
    fig.update_layout(height=520, margin=dict(b=150), legend=dict(orientation="h", y=-0.55))
    fig.update_xaxes(title_text="real value x")
    fig.update_yaxes(title_text="fake_quant(x)", row=1, col=1)
    fig.update_yaxes(title_text="fake_quant(x) - x", row=1, col=2)
    return fig


def channel_ranges_figure(w, axis: int = -1, num_bits: int = 8, title: str = "") -> go.Figure:
    """Per-channel min/max of a weight tensor, with the per-tensor grid's step for scale.

    Bars span each channel's [min, max]; the dashed lines show the per-tensor range. A channel
    narrower than a few per-tensor steps is crushed onto a handful of integer levels.

    Examples
    --------
    >>> fig = channel_ranges_figure(np.random.default_rng(0).normal(size=(9, 4)), axis=-1)
    >>> fig.data[0].type
    'bar'
    """
    from .analysis import channel_ranges, levels_per_channel

    w = np.moveaxis(np.asarray(w, np.float64), axis, -1)
    lo, hi = channel_ranges(w)
    levels = levels_per_channel(w, num_bits)
    per_tensor = compute_params(w.min(), w.max(), num_bits, symmetric=True, narrow_range=True)
    ch = np.arange(lo.size)
    fig = go.Figure(go.Bar(x=ch, y=hi - lo, base=lo, marker_color=COLORS[0], name="channel range",
                           customdata=levels,
                           hovertemplate="channel %{x}<br>[%{base:.3g}, %{y:.3g} wide]"
                                         "<br>%{customdata} distinct levels per-tensor<extra></extra>"))
    for v in per_tensor.range:
        fig.add_hline(y=float(v), line_dash="dash", line_color="gray")
    fig.update_layout(title=title or "per-channel weight ranges", xaxis_title="output channel",
                      yaxis_title="weight value", height=420, showlegend=False)
    return fig


def levels_used_figure(w, axis: int = -1, num_bits: int = 8) -> go.Figure:
    """Distinct integer levels each channel uses: per-tensor vs per-channel, same bit width.

    Examples
    --------
    >>> fig = levels_used_figure(np.random.default_rng(0).normal(size=(9, 4)))
    >>> [t.name for t in fig.data]
    ['per-tensor', 'per-channel']
    """
    from .analysis import levels_per_channel

    w = np.moveaxis(np.asarray(w, np.float64), axis, -1)
    used_t = levels_per_channel(w, num_bits)
    used_c = levels_per_channel(w, num_bits, per_channel=True)
    ch = np.arange(w.shape[-1])
    qmin, qmax = integer_range(num_bits, True)
    fig = go.Figure([go.Bar(x=ch, y=used_t, name="per-tensor", marker_color=COLORS[1]),
                     go.Bar(x=ch, y=used_c, name="per-channel", marker_color=COLORS[0])])
    fig.update_layout(barmode="group", yaxis_type="log", height=400,
                      title=f"distinct {num_bits}-bit levels used by each channel (of {qmax - qmin + 1})",
                      xaxis_title="output channel", yaxis_title="levels used (log)")
    return fig


def score_figure(accuracies=(0.6, 0.7, 0.8), budget_ms: float = 30.0) -> go.Figure:
    """The LPIRC score ``accuracy / max(budget x images, runtime)`` against runtime per image.

    Examples
    --------
    >>> len(score_figure().data)
    3
    """
    from .score import lpirc_score

    ms = np.linspace(5, 120, 231)
    fig = go.Figure()
    for i, acc in enumerate(accuracies):
        n = 1000  # images; n images at m ms each take n * m / 1000 seconds
        s = [lpirc_score(acc, n * m / 1000, n, budget_ms) for m in ms]
        fig.add_trace(go.Scatter(x=ms, y=s, name=f"top-1 accuracy {acc:.0%}",
                                 line=dict(color=COLORS[i % len(COLORS)])))
    fig.add_vline(x=budget_ms, line_dash="dash", line_color="gray")
    fig.update_layout(xaxis_title="runtime per image (ms)", yaxis_title="score (accuracy per second)",
                      height=380, title=f"Faster than {budget_ms:g} ms per image earns nothing more")
    return fig


_LAYER_COLORS = {"DepthwiseConv2D": "#ff7f0e", "Conv2D": "#1f77b4", "BatchNormalization": "#9467bd",
                 "ReLU": "#2ca02c", "ZeroPadding2D": "#bbbbbb"}


def block_diagram(chains: dict) -> go.Figure:
    """Layer chains drawn as columns of coloured boxes, one column per label (e.g. standard vs friendly).

    ``chains`` maps a row label to a list of ``(box label, layer type, layer name)``; the layer
    name shows on hover.

    Examples
    --------
    >>> fig = block_diagram({"a": [("depthwise", "DepthwiseConv2D", "dw"), ("pointwise", "Conv2D", "pw")]})
    >>> len(fig.layout.shapes)
    2
    """
    # one column per chain, layers top to bottom: narrow enough for a phone screen
    fig = go.Figure()
    labels = list(chains)
    for col, label in enumerate(labels):
        ys, names = [], []
        for row, (text, kind, name) in enumerate(chains[label]):
            y0 = -row * 1.4
            fig.add_shape(type="rect", x0=col - 0.4, x1=col + 0.4, y0=y0 - 0.5, y1=y0 + 0.5, line_width=0,
                          fillcolor=_LAYER_COLORS.get(kind, "#dddddd"), opacity=0.9)
            fig.add_annotation(x=col, y=y0, text=text, showarrow=False,
                               font=dict(size=12, color="black" if kind == "ZeroPadding2D" else "white"))
            if row:
                fig.add_annotation(x=col, y=y0 + 0.5, ax=col, ay=y0 + 0.9, xref="x", yref="y", axref="x",
                                   ayref="y", showarrow=True, arrowhead=2, arrowwidth=1.5, text="")
            ys.append(y0)
            names.append(f"{name} ({kind})")
        fig.add_trace(go.Scatter(x=[col] * len(ys), y=ys, mode="markers", marker=dict(opacity=0),
                                 hovertext=names, hoverinfo="text", showlegend=False))
    depth = max(len(c) for c in chains.values())
    fig.update_xaxes(range=[-0.6, len(labels) - 0.4], tickvals=list(range(len(labels))), ticktext=labels,
                     side="top", showgrid=False, zeroline=False)
    fig.update_yaxes(visible=False, range=[-(depth - 1) * 1.4 - 0.6, 0.6])
    fig.update_layout(height=60 + 50 * depth, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def top_k_figure(images: dict, probabilities: dict, names, k: int = 5) -> go.Figure:
    """Each photo next to its top-``k`` predicted classes (one row per photo).

    Examples
    --------
    >>> img = np.zeros((4, 4, 3), np.uint8)
    >>> fig = top_k_figure({"x": img}, {"x": np.array([0.7, 0.2, 0.1])}, ["a", "b", "c"], k=2)
    >>> fig.data[1].y
    ('b', 'a')
    """
    fig = make_subplots(rows=len(images), cols=2, column_widths=[0.4, 0.6], horizontal_spacing=0.15,
                        subplot_titles=[t for key in images for t in (key, f"top-{k} classes")])
    for r, key in enumerate(images, start=1):
        fig.add_trace(go.Image(z=images[key]), r, 1)
        p = np.asarray(probabilities[key])
        top = np.argsort(-p)[:k][::-1]
        fig.add_trace(go.Bar(x=p[top], y=[names[i] for i in top], orientation="h",
                             marker_color=COLORS[0], showlegend=False,
                             hovertemplate="%{y}: %{x:.3f}<extra></extra>"), r, 2)
        fig.update_xaxes(visible=False, row=r, col=1)
        fig.update_yaxes(visible=False, row=r, col=1)
        fig.update_xaxes(title_text="probability", range=[0, 1], row=r, col=2)
    fig.update_layout(height=320 * len(images), margin=dict(l=20, r=20, t=40, b=20))
    return fig


def add_steps(fig: go.Figure, steps, control: str = "slider", prefix: str = "", titles=None, active: int = 0,
              **control_kw) -> go.Figure:
    """Show one group of traces at a time, picked by a plotly slider or dropdown (works in static HTML).

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
        A figure whose traces are all added.
    steps : list of (label, trace indices)
        One entry per slider position or dropdown item; traces listed in no step stay visible.
    control : {"slider", "dropdown"}
    prefix : str
        Slider label prefix (e.g. ``"num_bits = "``).
    titles : list of str, optional
        The figure title at each step.
    active : int
        The step shown first.
    control_kw
        Passed to the slider or dropdown (position, padding).

    Examples
    --------
    >>> fig = go.Figure([go.Scatter(y=[0, 1]), go.Scatter(y=[1, 0]), go.Scatter(y=[0.5, 0.5])])
    >>> fig = add_steps(fig, [("a", [0]), ("b", [1])], control="dropdown")
    >>> [t.visible for t in fig.data], fig.layout.updatemenus[0].buttons[1].args[0]["visible"]
    ([True, False, True], [False, True, True])
    """
    if control not in ("slider", "dropdown"):
        raise ValueError(f"control must be 'slider' or 'dropdown', got {control!r}")
    n = len(fig.data)
    stepped = {j for _, idx in steps for j in idx}
    groups = [set(idx) for _, idx in steps]

    def visible(i):
        return [j in groups[i] or j not in stepped for j in range(n)]

    for j, v in enumerate(visible(active)):
        fig.data[j].visible = v
    entries = []
    for i, (label, _) in enumerate(steps):
        args = [{"visible": visible(i)}]
        if titles is not None:
            args.append({"title.text": titles[i]})
        entries.append(dict(method="update", label=str(label), args=args))
    if control == "slider":
        fig.update_layout(sliders=[dict(active=active, currentvalue=dict(prefix=prefix), steps=entries, **control_kw)])
    else:
        fig.update_layout(updatemenus=[dict(buttons=entries, **control_kw)])
    if titles is not None:
        fig.update_layout(title=titles[active])
    return fig


def _groups(n_groups: int, per_group: int, labels) -> list:
    """Steps for traces added in equal consecutive groups, one group per label."""
    return [(lab, list(range(i * per_group, (i + 1) * per_group))) for i, lab in enumerate(labels)]


def _segments(x, lo, hi):
    """One scatter trace's x/y drawing a vertical segment [lo, hi] at each x (None-separated)."""
    xs = np.repeat(np.asarray(x, np.float64), 3)
    ys = np.stack([lo, hi, np.full(np.shape(lo), np.nan)], axis=1).ravel()
    xs[2::3] = np.nan
    return xs, ys


def layer_ranges_figure(kernels: dict, num_bits: int = 8, title: str = "") -> go.Figure:
    """Per-channel weight ranges of several layers, one dropdown entry per layer (static HTML).

    Channels are sorted by the width of their range, widest first, so that a layer of 960
    channels still reads at a glance: each channel is a vertical segment from its minimum to its
    maximum weight, red where the per-tensor ``num_bits`` grid (dashed: its range) leaves it
    fewer than four distinct levels. Hover a segment for the channel's index and levels.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> fig = layer_ranges_figure({"a": rng.normal(size=(3, 3, 4)), "b": rng.normal(size=(3, 3, 6))})
    >>> len(fig.data), len(fig.layout.updatemenus[0].buttons)
    (6, 2)
    """
    from .analysis import channel_ranges, levels_per_channel

    fig = go.Figure()
    names = list(kernels)
    for name in names:
        w = np.asarray(kernels[name], np.float64)
        lo, hi = channel_ranges(w)
        levels = levels_per_channel(w, num_bits)
        order = np.argsort(-(hi - lo), kind="stable")
        rank = np.arange(lo.size)
        m = float(np.abs(w).max())
        for few, color, label in ((False, COLORS[0], f">= 4 of {2 ** num_bits - 1} levels"),
                                  (True, COLORS[1], "fewer than 4 levels per tensor")):
            sel = (levels[order] < 4) == few
            xs, ys = _segments(rank[sel], lo[order][sel], hi[order][sel])
            text = np.repeat([f"channel {c}: [{a:.3g}, {b:.3g}], {n} levels per tensor"
                              for c, a, b, n in zip(order[sel], lo[order][sel], hi[order][sel], levels[order][sel])], 3)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=2), name=label,
                                     text=text, hoverinfo="text", connectgaps=False))
        fig.add_trace(go.Scatter(x=[-0.5, lo.size - 0.5, None, -0.5, lo.size - 0.5], y=[-m, -m, None, m, m],
                                 mode="lines", line=dict(dash="dash", color="gray"), hoverinfo="skip",
                                 name="per-tensor range"))
    add_steps(fig, _groups(len(names), 3, names), "dropdown", titles=[f"{title}{n}" for n in names],
              x=1.0, xanchor="right", y=1.18, yanchor="top")
    fig.update_layout(xaxis_title="channels, sorted by range (widest first)", yaxis_title="folded weight",
                      height=460, legend=dict(orientation="h", y=-0.2))
    return fig


def epsilon_figure(kernel, variance, gamma, epsilons, num_bits: int = 8) -> go.Figure:
    """Slider over BatchNorm epsilon: each folded depthwise channel's range, and its 8-bit SQNR.

    ``kernel`` is the unfolded depthwise kernel ``(kh, kw, C)``; ``variance`` and ``gamma`` the
    BN's running variance and scale. For each epsilon the folded kernel is quantized per tensor.
    Channels are sorted by running variance (the dead ones, variance below 1e-3, first, in red),
    one marker each, so hundreds of channels stay readable.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> fig = epsilon_figure(rng.normal(size=(3, 3, 4)), np.array([1, 1, 1e-9, 1]), np.ones(4), [1e-5, 1e-3])
    >>> len(fig.layout.sliders[0].steps), len(fig.data)
    (2, 8)
    """
    kernel = np.asarray(kernel, np.float64)
    variance, gamma = np.asarray(variance, np.float64), np.asarray(gamma, np.float64)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("largest |folded w| (log)", f"{num_bits}-bit per-tensor SQNR (dB)"))
    order = np.argsort(variance, kind="stable")
    rank = np.arange(order.size)
    tiny = variance[order] < 1e-3
    groups = []
    for eps in epsilons:
        folded = (kernel * (gamma / np.sqrt(variance + eps)))[..., order]
        flat = folded.reshape(-1, folded.shape[-1])
        absmax = np.abs(flat).max(axis=0)
        p = fit_params(folded, num_bits, symmetric=True, narrow_range=True)
        err = ((flat - p.fake_quant(flat)) ** 2).sum(axis=0)
        sig = (flat ** 2).sum(axis=0)
        sqnr = np.clip(10 * np.log10(np.maximum(sig, 1e-300) / np.maximum(err, 1e-300)), -10, 60)
        start = len(fig.data)
        for dead, color, size, label in ((False, COLORS[0], 4, "live channel"),
                                         (True, COLORS[1], 7, "dead channel (variance < 1e-3)")):
            sel = tiny == dead
            text = [f"channel {c}, variance {v:.2g}" for c, v in zip(order[sel], variance[order][sel])]
            fig.add_trace(go.Scatter(x=rank[sel], y=absmax[sel], mode="markers", name=label, legendgroup=label,
                                     marker=dict(color=color, size=size), text=text,
                                     hovertemplate="%{text}<br>max |w| %{y:.3g}<extra></extra>"), 1, 1)
            fig.add_trace(go.Scatter(x=rank[sel], y=sqnr[sel], mode="markers", name=label, legendgroup=label,
                                     showlegend=False, marker=dict(color=color, size=size), text=text,
                                     hovertemplate="%{text}<br>%{y:.1f} dB<extra></extra>"), 1, 2)
        groups.append((f"{eps:.0e}", list(range(start, len(fig.data)))))
    add_steps(fig, groups, "slider", "epsilon = ", pad=dict(t=60))
    fig.update_layout(height=540, margin=dict(t=100), legend=dict(orientation="h", y=1.2, yanchor="bottom", x=0))
    fig.update_yaxes(type="log", dtick=1, row=1, col=1)
    fig.update_xaxes(title_text="channels, sorted by running variance")
    return fig


def range_loss_figure(x, num_bits: int = 4, bins: int = 512, steps: int = 40) -> go.Figure:
    """Slider that clips a tensor's range: its histogram, the grid, and the two losses it trades off.

    The histogram's counts are on a log axis: a tensor after a ReLU has a huge bin of exact zeros
    that would otherwise flatten every other bin.

    Examples
    --------
    >>> fig = range_loss_figure(np.random.default_rng(0).laplace(size=2000), steps=5)
    >>> len(fig.layout.sliders[0].steps)
    5
    """
    from .ranges import histogram, quantization_loss

    x = np.ravel(np.asarray(x, np.float64))
    counts, centres = histogram(x, bins)
    lo0, hi0 = float(x.min()), float(x.max())
    fracs = np.linspace(1.0, 0.05, steps)
    q_loss, s_loss = zip(*[quantization_loss(counts, centres, f * lo0, f * hi0, num_bits) for f in fracs])
    fig = make_subplots(rows=1, cols=2, subplot_titles=("histogram and the quantization grid",
                                                        "loss against the clipping fraction"))
    fig.add_trace(go.Bar(x=centres, y=counts, marker_color="#888888", name="histogram (log counts)",
                         hovertemplate="%{x:.3g}: %{y} values<extra></extra>"), 1, 1)
    n_fixed = 1
    top = float(counts.max()) * 2
    for i, f in enumerate(fracs):
        p = compute_params(f * lo0, f * hi0, num_bits)
        grid = (np.arange(p.qmin, p.qmax + 1) - int(p.zero_point)) * float(p.scale)
        fig.add_trace(go.Scatter(x=np.repeat(grid, 3), y=np.tile([0.5, top, None], grid.size),
                                 mode="lines", line=dict(color=COLORS[0], width=1), hoverinfo="skip",
                                 name=f"the {num_bits}-bit grid"), 1, 1)
    total = np.array(q_loss) + np.array(s_loss)
    fig.add_trace(go.Scatter(x=fracs, y=q_loss, name="quantization loss", line=dict(color=COLORS[0])), 1, 2)
    fig.add_trace(go.Scatter(x=fracs, y=s_loss, name="saturation loss", line=dict(color=COLORS[1])), 1, 2)
    fig.add_trace(go.Scatter(x=fracs, y=total, name="total", line=dict(color="black", dash="dot")), 1, 2)
    add_steps(fig, [(f"{f:.2f}", [n_fixed + i]) for i, f in enumerate(fracs)], "slider",
              "fraction of min-max range kept: ",
              [f"range x {f:.2f}: quantization {q_loss[i]:.2e}, saturation {s_loss[i]:.2e}" for i, f in enumerate(fracs)],
              pad=dict(t=60))
    fig.update_layout(height=540, margin=dict(t=130), title_y=0.97,
                      legend=dict(orientation="h", y=1.13, yanchor="bottom", x=0))
    fig.update_yaxes(type="log", range=[np.log10(0.5), np.log10(top)], title_text="values per bin", row=1, col=1)
    fig.update_xaxes(title_text="value", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(autorange="reversed", title_text="fraction of the min-max range", row=1, col=2)
    return fig


def histogram_figure(values, nbins: int = 90, log10: bool = False, vline: float | None = None,
                     title: str = "", x_title: str = "value", y_title: str = "count") -> go.Figure:
    """A histogram of ``values`` (of their base-10 logarithm with ``log10``), with an optional dashed line.

    Examples
    --------
    >>> fig = histogram_figure([1e-9, 1e-3, 1.0, 2.0], log10=True, vline=-3)
    >>> fig.data[0].type, round(float(min(fig.data[0].x)), 1)
    ('histogram', -9.0)
    """
    v = np.ravel(np.asarray(values, np.float64))
    x = np.log10(np.maximum(v, np.finfo(np.float64).tiny)) if log10 else v
    fig = go.Figure(go.Histogram(x=x, nbinsx=nbins, marker_color=COLORS[0]))
    if vline is not None:
        fig.add_vline(x=vline, line_dash="dash", line_color=COLORS[1])
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=380)
    return fig


def scatter_figure(x, y, log_x: bool = False, log_y: bool = False, color=None, title: str = "",
                   x_title: str = "", y_title: str = "") -> go.Figure:
    """A plain scatter plot of many points (WebGL), optionally on log axes and coloured by a boolean mask.

    Examples
    --------
    >>> fig = scatter_figure([1, 10, 100], [3, 2, 1], log_x=True, color=[True, False, False])
    >>> fig.layout.xaxis.type, len(fig.data)
    ('log', 2)
    """
    x, y = np.ravel(np.asarray(x, np.float64)), np.ravel(np.asarray(y, np.float64))
    mask = np.zeros(x.size, bool) if color is None else np.ravel(np.asarray(color, bool))
    fig = go.Figure()
    for flag, c, name in ((False, COLORS[0], "" if color is None else "other"), (True, COLORS[1], "marked")):
        if np.any(mask == flag):
            fig.add_trace(go.Scattergl(x=x[mask == flag], y=y[mask == flag], mode="markers", name=name,
                                       marker=dict(size=3 if x.size > 1000 else 5, color=c),
                                       showlegend=color is not None))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=400,
                      xaxis_type="log" if log_x else "linear", yaxis_type="log" if log_y else "linear")
    return fig


def channel_boxes_figure(w, title: str = "") -> go.Figure:
    """One box per output channel (last axis) over that channel's weights: the DFQ paper's Figure 2.

    Examples
    --------
    >>> fig = channel_boxes_figure(np.random.default_rng(0).normal(size=(3, 3, 5)))
    >>> len(fig.data), fig.data[0].type
    (5, 'box')
    """
    w = np.asarray(w, np.float64)
    flat = w.reshape(-1, w.shape[-1])
    fig = go.Figure([go.Box(y=flat[:, c], name=str(c), marker_color=COLORS[0], showlegend=False, boxpoints=False)
                     for c in range(flat.shape[1])])
    fig.update_layout(title=title, xaxis_title="output channel", yaxis_title="weight", height=420)
    return fig


def per_layer_figure(panels: dict, y_title: str, log_y: bool = True, hline: float | None = None,
                     x_title: str = "layer") -> go.Figure:
    """Side-by-side panels of per-layer values, one line per series: ``{panel: {series: values}}``.

    Every panel gets the same explicit y axis (type and range) with its own tick labels, so the
    panels can be compared (plotly may ignore ``matches`` between subplots).

    Examples
    --------
    >>> fig = per_layer_figure({"v1": {"standard": [1, 30], "friendly": [1, 2]}, "V2": {"standard": [2, 9]}},
    ...                        "ratio")
    >>> fig.layout.yaxis.type, fig.layout.yaxis2.type, list(fig.layout.yaxis2.range) == list(fig.layout.yaxis.range)
    ('log', 'log', True)
    """
    names = list(panels)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.08)
    series = list(dict.fromkeys(k for p in panels.values() for k in p))
    all_vals = np.concatenate([np.asarray(v, np.float64) for p in panels.values() for v in p.values()]
                              + ([np.array([hline])] if hline is not None else []))
    for col, name in enumerate(names, start=1):
        for j, label in enumerate(series):
            if label not in panels[name]:
                continue
            v = np.asarray(panels[name][label], np.float64)
            fig.add_trace(go.Scatter(x=np.arange(1, v.size + 1), y=v, mode="lines+markers", name=label,
                                     legendgroup=label, showlegend=col == 1,
                                     line=dict(color=COLORS[j % len(COLORS)])), 1, col)
        if hline is not None:
            fig.add_hline(y=hline, line_dash="dash", line_color="gray", row=1, col=col)
    if log_y:
        lo, hi = np.log10(all_vals[all_vals > 0].min()), np.log10(all_vals.max())
        pad = 0.05 * max(hi - lo, 0.1)
        fig.update_yaxes(type="log", range=[lo - pad, hi + pad], showticklabels=True)
    else:
        pad = 0.05 * max(all_vals.max() - all_vals.min(), 1e-9)
        fig.update_yaxes(range=[all_vals.min() - pad, all_vals.max() + pad], showticklabels=True)
    fig.update_yaxes(title_text=y_title, col=1)
    fig.update_xaxes(title_text=x_title)
    fig.update_layout(height=420, legend=dict(orientation="h", y=-0.2))
    return fig


def agreement_vs_bits_figure(records: list, title: str = "", lines=None, ci_field: str | None = None) -> go.Figure:
    """Top-1 agreement with float against weight bits, with error bars when records carry an interval.

    ``records`` are dicts with ``weight_bits``, ``agreement``, the interval ``ci_field`` (a
    ``[low, high]`` pair, e.g. ``"agreement_ci95_photo_bootstrap"``) if given, and the fields named
    in ``lines``: ``{label: {field: value}}`` (default: per tensor vs per channel).

    Examples
    --------
    >>> recs = [dict(weight_bits=b, per_channel=pc, agreement=a) for b, pc, a in [(4, False, .2), (8, False, .8),
    ...                                                                          (4, True, .7), (8, True, .97)]]
    >>> [t.name for t in agreement_vs_bits_figure(recs).data]
    ['per tensor', 'per channel']
    >>> for r in recs: r["ci"] = [r["agreement"] - 0.05, r["agreement"] + 0.02]
    >>> [round(v, 2) for v in agreement_vs_bits_figure(recs, ci_field="ci").data[0].error_y.arrayminus]
    [0.05, 0.05]
    """
    lines = lines or {"per tensor": {"per_channel": False}, "per channel": {"per_channel": True}}
    fig = go.Figure()
    for j, (label, sel) in enumerate(lines.items()):
        rs = sorted((r for r in records if all(r.get(k) == v for k, v in sel.items())), key=lambda r: r["weight_bits"])
        err = None
        if ci_field is not None and rs:
            err = dict(type="data", symmetric=False, array=[r[ci_field][1] - r["agreement"] for r in rs],
                       arrayminus=[r["agreement"] - r[ci_field][0] for r in rs])
        fig.add_trace(go.Scatter(x=[r["weight_bits"] for r in rs], y=[r["agreement"] for r in rs], error_y=err,
                                 mode="lines+markers", name=label, line=dict(color=COLORS[j % len(COLORS)])))
    ticks = sorted({r["weight_bits"] for r in records})
    fig.update_layout(title=title, xaxis_title="weight bits", yaxis_title="top-1 agreement with float",
                      yaxis_range=[0, 1.02], height=420, legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[str(t) for t in ticks])
    return fig


def dead_channels_figure(layers: dict, num_bits: int = 8, title: str = "") -> go.Figure:
    """Per-channel ``max |w|`` of depthwise layers before and after BatchNorm folding, dead channels marked.

    ``layers`` maps a layer name to ``(raw kernel, folded kernel, dead mask)`` or ``(raw, folded, dead,
    quiet)`` (kernels with channels last; ``quiet``: channels with one sign of being dead but not
    the other). Channels are sorted by their folded range; the dashed line is one step of the
    per-tensor ``num_bits`` grid after folding: a live channel below a few steps keeps only a few
    levels. One dropdown entry per layer.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> raw = rng.normal(size=(3, 3, 6)); folded = raw * np.array([1, 1, 1, 1, 300, 300])
    >>> fig = dead_channels_figure({"dw": (raw, folded, np.array([0, 0, 0, 0, 1, 1], bool))})
    >>> len(fig.data), fig.layout.yaxis.type
    (7, 'log')
    """
    from .quantizers import integer_range

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=("before folding", "after folding"))
    names, groups, lo_all, hi_all = list(layers), [], [], []
    qmax = integer_range(num_bits, True)[1]
    kinds = (("live", COLORS[0], 4, "live channel"), ("quiet", COLORS[3], 5, "one sign only (quiet)"),
             ("dead", COLORS[1], 7, "dead channel"))
    for name in names:
        raw, folded, dead, *rest = layers[name]
        dead = np.asarray(dead, bool)
        quiet = np.asarray(rest[0], bool) & ~dead if rest else np.zeros_like(dead)
        kind_of = np.where(dead, "dead", np.where(quiet, "quiet", "live"))
        r = np.abs(np.asarray(raw, np.float64)).reshape(-1, dead.size).max(axis=0)
        f = np.abs(np.asarray(folded, np.float64)).reshape(-1, dead.size).max(axis=0)
        order = np.argsort(-f, kind="stable")
        rank = np.arange(dead.size)
        start = len(fig.data)
        for key, color, size, label in kinds:
            sel = kind_of[order] == key
            text = [f"channel {c}" for c in order[sel]]
            for col, vals in ((1, r), (2, f)):
                fig.add_trace(go.Scatter(x=rank[sel], y=vals[order][sel], mode="markers", name=label,
                                         legendgroup=label, showlegend=col == 1, text=text,
                                         marker=dict(color=color, size=size),
                                         hovertemplate="%{text}: %{y:.3g}<extra></extra>"), 1, col)
        step = f.max() / qmax
        fig.add_trace(go.Scatter(x=[0, dead.size - 1], y=[step, step], mode="lines", hoverinfo="skip",
                                 line=dict(dash="dash", color="gray"),
                                 name=f"one step of the per-tensor {num_bits}-bit grid"), 1, 2)
        groups.append((name, list(range(start, len(fig.data)))))
        pos = np.concatenate([r[r > 0], f[f > 0]])
        lo_all.append(pos.min())
        hi_all.append(pos.max())
    rng = [np.log10(min(lo_all)) - 0.2, np.log10(max(hi_all)) + 0.2]
    fig.update_yaxes(type="log", range=rng, showticklabels=True, dtick=1)
    fig.update_yaxes(title_text="largest |w| in the channel", col=1)
    fig.update_xaxes(title_text="channels, sorted by folded range")
    if len(names) > 1:
        add_steps(fig, groups, "dropdown", titles=[f"{title}{n}" for n in names],
                  x=1.0, xanchor="right", y=1.25, yanchor="bottom")
    fig.update_layout(title=dict(text=f"{title}{names[0]}", y=0.97), height=500, margin=dict(t=110),
                      legend=dict(orientation="h", y=-0.22))
    return fig


def accuracy_vs_bits_figure(records: list, models: list, x_key: str = "weight_bits", lines=None,
                            float_acc: dict | None = None, title: str = "") -> go.Figure:
    """Top-1 accuracy (with 95% CI) against bit width; a dropdown picks the model.

    ``records`` are dicts with ``model``, ``x_key``, ``accuracy``, ``ci_low``, ``ci_high`` and
    the fields named in ``lines``: ``{label: {field: value, ...}}`` selects one curve each.

    Examples
    --------
    >>> recs = [dict(model="m", weight_bits=b, per_channel=pc, accuracy=a, ci_low=a - .01, ci_high=a + .01)
    ...         for b, pc, a in [(4, False, .1), (8, False, .9), (4, True, .8), (8, True, .91)]]
    >>> fig = accuracy_vs_bits_figure(recs, ["m"], lines={"pt": {"per_channel": False}, "pc": {"per_channel": True}})
    >>> len(fig.data)
    2
    """
    lines = lines or {}
    fig = go.Figure()
    per_model = len(lines) + (1 if float_acc else 0)
    for i, model in enumerate(models):
        for j, (label, sel) in enumerate(lines.items()):
            rs = sorted((r for r in records if r["model"] == model and all(r.get(k) == v for k, v in sel.items())),
                        key=lambda r: r[x_key])
            xs = [r[x_key] for r in rs]
            ys = np.array([r["accuracy"] for r in rs])
            fig.add_trace(go.Scatter(
                x=xs, y=ys, name=label, mode="lines+markers",
                line=dict(color=COLORS[j % len(COLORS)]),
                error_y=dict(type="data", symmetric=False, array=[r["ci_high"] - r["accuracy"] for r in rs],
                             arrayminus=[r["accuracy"] - r["ci_low"] for r in rs])))
        if float_acc:
            fig.add_trace(go.Scatter(x=[2, 16], y=[float_acc[model]] * 2, mode="lines", name="float",
                                     line=dict(color="gray", dash="dash")))
    if len(models) > 1:
        add_steps(fig, _groups(len(models), per_model, models), "dropdown", titles=[f"{title}{m}" for m in models],
                  x=1.0, xanchor="right", y=1.2, yanchor="top")
    fig.update_layout(title=f"{title}{models[0]}", xaxis_title=x_key.replace("_", " "), yaxis_title="top-1 accuracy",
                      yaxis_range=[0, 1], height=460, legend=dict(orientation="h", y=-0.25))
    fig.update_xaxes(type="log", tickvals=[2, 3, 4, 5, 6, 7, 8, 10, 12, 16], ticktext=[2, 3, 4, 5, 6, 7, 8, 10, 12, 16])
    return fig


# --- Learning to round ---

__all__ += ["rounding_choices_figure", "soft_rounding_figure", "layer_errors_figure", "iterations_figure"]

def rounding_choices_figure(errors, nearest_error: float, best_error: float, title: str = "") -> go.Figure:
    """Histogram of a layer's output error over every up/down choice of a few weights, nearest and best marked.

    Examples
    --------
    >>> fig = rounding_choices_figure(np.random.default_rng(0).uniform(1, 2, 64), 1.5, 1.0)
    >>> fig.data[0].type, len(fig.layout.shapes)
    ('histogram', 2)
    """
    errors = np.asarray(errors, np.float64)
    worse = float(np.mean(errors > nearest_error + 1e-15))
    fig = go.Figure(go.Histogram(x=errors, nbinsx=60, marker_color="#9fb7d3", name="every rounding",
                                 hovertemplate="output error %{x}<br>%{y} roundings<extra></extra>"))
    fig.add_vline(x=float(nearest_error), line_color=COLORS[1], line_width=3)
    fig.add_vline(x=float(best_error), line_color=COLORS[2], line_width=3)
    fig.add_annotation(x=float(nearest_error), y=1.0, yref="paper", text="nearest", showarrow=False,
                       xanchor="left", font=dict(color=COLORS[1]))
    fig.add_annotation(x=float(best_error), y=0.92, yref="paper", text="best", showarrow=False,
                       xanchor="right", font=dict(color=COLORS[2]))
    fig.update_layout(title=title or f"{errors.size} roundings: nearest beats {worse:.0%} of them, not all",
                      xaxis_title="output error (mean squared)", yaxis_title="number of roundings", height=380,
                      showlegend=False)
    return fig


def soft_rounding_figure(rest, snapshots: dict, final_up, max_points: int = 1500, seed: int = 0) -> go.Figure:
    """Slider over AdaRound's iterations: each weight's soft rounding ``h(V)`` against where it started.

    Left: ``h(V)`` against the fractional part ``w/s - floor(w/s)`` (nearest rounding rounds up
    right of 1/2): at iteration 0 the points lie on the diagonal; by the end they sit at 0 (down)
    or 1 (up). Red: weights whose final rounding differs from nearest. Right: the histogram of ``h``.

    Examples
    --------
    >>> rest = np.linspace(0.01, 0.99, 20)
    >>> snaps = {0: rest, 10: np.round(rest)}
    >>> fig = soft_rounding_figure(rest, snaps, rest > 0.5)
    >>> len(fig.data), len(fig.layout.sliders[0].steps)
    (6, 2)
    """
    rest = np.ravel(np.asarray(rest, np.float64))
    final_up = np.ravel(np.asarray(final_up, bool))
    idx = np.arange(rest.size)
    if rest.size > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(rest.size, max_points, replace=False))
    flipped = final_up[idx] != (rest[idx] >= 0.5)
    colors = np.where(flipped, COLORS[1], "#7f9fbf")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4],
                        subplot_titles=("h(V) against the fractional part of w/s", "histogram of h(V)"))
    its = sorted(snapshots)
    for it in its:
        h = np.ravel(np.asarray(snapshots[it], np.float64))
        fig.add_trace(go.Scattergl(x=rest[idx], y=h[idx], mode="markers", marker=dict(size=4, color=colors),
                                   showlegend=False, hovertemplate="w/s - floor: %{x:.2f}<br>h: %{y:.2f}<extra></extra>"),
                      1, 1)
        fig.add_trace(go.Histogram(x=h, xbins=dict(start=0, end=1.0001, size=0.05), marker_color=COLORS[0],
                                   showlegend=False), 1, 2)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="gray", dash="dot"),
                             hoverinfo="skip", showlegend=False), 1, 1)
    fig.add_trace(go.Scatter(x=[0.5, 0.5], y=[0, 1], mode="lines", line=dict(color="gray", dash="dash"),
                             hoverinfo="skip", showlegend=False), 1, 1)
    titles = [f"iteration {it}: {np.mean((np.asarray(snapshots[it]) > 0) & (np.asarray(snapshots[it]) < 1)):.0%} "
              f"of h strictly between 0 and 1" for it in its]
    add_steps(fig, _groups(len(its), 2, its), "slider", "iteration ", titles, active=0, pad=dict(t=50))
    fig.update_xaxes(title_text="w/s - floor(w/s)", range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="h(V)", range=[-0.05, 1.05], row=1, col=1)
    fig.update_xaxes(title_text="h(V)", range=[0, 1], row=1, col=2)
    fig.update_yaxes(title_text="weights", type="log", row=1, col=2)
    fig.update_layout(height=500, margin=dict(b=140))
    return fig


def layer_errors_figure(records: list, configs: dict, title: str = "") -> go.Figure:
    """Per-layer output error, nearest rounding against AdaRound; a dropdown picks the configuration.

    ``records`` are per-layer dicts with ``name``, ``mse_nearest``, ``mse`` and the fields that
    ``configs`` (``{label: {field: value}}``) select on.

    Examples
    --------
    >>> recs = [dict(model="m", name=f"l{i}", mse_nearest=1.0, mse=0.5) for i in range(3)]
    >>> fig = layer_errors_figure(recs, {"m": {"model": "m"}})
    >>> [t.name for t in fig.data]
    ['nearest', 'AdaRound']
    """
    fig = go.Figure()
    labels = list(configs)
    for label in labels:
        rs = [r for r in records if all(r.get(k) == v for k, v in configs[label].items())]
        names = [r["name"] for r in rs]
        fig.add_trace(go.Scatter(x=names, y=[r["mse_nearest"] for r in rs], mode="lines+markers", name="nearest",
                                 line=dict(color=COLORS[1])))
        fig.add_trace(go.Scatter(x=names, y=[r["mse"] for r in rs], mode="lines+markers", name="AdaRound",
                                 line=dict(color=COLORS[2]),
                                 customdata=[[r.get("flipped", 0)] for r in rs],
                                 hovertemplate="%{x}: %{y:.3g}<br>%{customdata[0]:.0%} of weights flipped"
                                               "<extra></extra>"))
    if len(labels) > 1:
        add_steps(fig, _groups(len(labels), 2, labels), "dropdown", titles=[f"{title}{l}" for l in labels],
                  x=1.0, xanchor="right", y=1.22, yanchor="top")
    fig.update_layout(title=f"{title}{labels[0]}", yaxis_type="log", yaxis_title="output error (mean squared)",
                      height=440, legend=dict(orientation="h", y=-0.35), margin=dict(b=120))
    fig.update_xaxes(tickangle=-60)
    return fig


def iterations_figure(records: list, configs: dict, float_acc: dict | None = None) -> go.Figure:
    """AdaRound's accuracy and its time against the number of iterations per layer, one line per configuration.

    Examples
    --------
    >>> recs = [dict(model="m", iterations=i, accuracy=a, ci_low=a - .01, ci_high=a + .01, seconds=i / 10)
    ...         for i, a in [(0, .5), (100, .8), (500, .9)]]
    >>> fig = iterations_figure(recs, {"m": {"model": "m"}})
    >>> len(fig.data)
    2
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("top-1 accuracy", "time for the whole model (s)"))
    for j, (label, sel) in enumerate(configs.items()):
        rs = sorted((r for r in records if all(r.get(k) == v for k, v in sel.items())), key=lambda r: r["iterations"])
        xs = [max(r["iterations"], 10) for r in rs]
        color = COLORS[j % len(COLORS)]
        fig.add_trace(go.Scatter(x=xs, y=[r["accuracy"] for r in rs], mode="lines+markers", name=label,
                                 line=dict(color=color), customdata=[r["iterations"] for r in rs],
                                 hovertemplate="%{customdata} iterations: %{y:.1%}<extra></extra>",
                                 error_y=dict(type="data", symmetric=False,
                                              array=[r["ci_high"] - r["accuracy"] for r in rs],
                                              arrayminus=[r["accuracy"] - r["ci_low"] for r in rs])), 1, 1)
        fig.add_trace(go.Scatter(x=xs, y=[r["seconds"] for r in rs], mode="lines+markers", name=label,
                                 line=dict(color=color), showlegend=False, customdata=[r["iterations"] for r in rs],
                                 hovertemplate="%{customdata} iterations: %{y:.0f} s<extra></extra>"), 1, 2)
        if float_acc and label in float_acc:
            fig.add_trace(go.Scatter(x=[10, max(xs)], y=[float_acc[label]] * 2, mode="lines", showlegend=False,
                                     line=dict(color=color, dash="dot"), hoverinfo="skip"), 1, 1)
    ticks = [10, 25, 50, 100, 200, 500, 1000]
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=["0"] + [str(t) for t in ticks[1:]],
                     title_text="iterations per layer")
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_layout(height=420, legend=dict(orientation="h", y=-0.3))
    return fig

"""MyST-NB plugin: render plotly's own mime type as HTML in the book.

Chapters show figures with plotly's ``plotly_mimetype`` renderer, which JupyterLab renders live.
MyST-NB does not know that mime type; this plugin (registered under the
``myst_nb.mime_renderers`` entry point in ``pyproject.toml``) turns it into a ``<div>`` and a
``Plotly.newPlot`` call. plotly.js itself is loaded once per page by ``book/_ext/qbook_plotly.py``.
"""

from __future__ import annotations

import json

__all__ = ["PLOTLY_MIME", "PlotlyMimeRenderer"]

PLOTLY_MIME = "application/vnd.plotly.v1+json"


class PlotlyMimeRenderer:
    """Render ``application/vnd.plotly.v1+json`` outputs to raw HTML (HTML builders only)."""

    mime_priority_overrides = [("html", PLOTLY_MIME, 5), ("dirhtml", PLOTLY_MIME, 5),
                               ("singlehtml", PLOTLY_MIME, 5)]

    @staticmethod
    def handle_mime(renderer, data, inline):
        if data.mime_type != PLOTLY_MIME or inline:
            return None
        from docutils import nodes
        import plotly.io as pio

        fig = data.content if isinstance(data.content, dict) else json.loads(data.content)
        html = pio.to_html(fig, include_plotlyjs=False, include_mathjax=False, full_html=False,
                           default_width="100%", default_height=480, validate=False)
        return [nodes.raw(text=html, format="html", classes=["output", "text_html", "qbook-plotly"])]

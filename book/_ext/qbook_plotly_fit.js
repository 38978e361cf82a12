// Fit every plotly figure to its width (a phone as well as a desktop): when the title, subplot
// titles, legend, menus or sliders collide or run past the figure's edge, wrap and shrink the
// text and move the legend, then measure again. Runs after every draw, so titles that sliders and
// dropdowns change are fitted too. Served locally by book/_ext/qbook_plotly.py.
(function () {
  "use strict";

  function box(e) { const r = e.getBoundingClientRect(); return r.width * r.height > 0 ? r : null; }
  function hit(a, b) {
    return Math.min(a.right, b.right) - Math.max(a.left, b.left) > 2 &&
           Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 2;
  }
  function parts(gd, sel) { return [...gd.querySelectorAll(sel)].map(box).filter(Boolean); }

  // what collides: the same parts the book's browser test checks
  function problems(gd) {
    const frame = gd.getBoundingClientRect();
    const out = (b) => b.left < frame.left - 2 || b.right > frame.right + 2;
    const title = parts(gd, ".g-gtitle text"), subs = parts(gd, ".annotation"),
          legend = parts(gd, ".legend .traces"), axes = parts(gd, '[class^="g-x"][class$="title"] text, [class^="g-y"][class$="title"] text'),
          sliders = parts(gd, ".slider-container"), menus = parts(gd, ".updatemenu-header-group");
    const any = (xs, ys) => xs.some(a => ys.some(b => hit(a, b)));
    const pairs = (xs) => xs.some((a, i) => xs.slice(i + 1).some(b => hit(a, b)));
    return {
      title: title.some(out) || any(title, subs.concat(legend, axes, sliders, menus)),
      subs: subs.some(out) || pairs(subs) || any(subs, legend.concat(axes, sliders, menus)),
      legend: legend.some(out) || any(legend, axes.concat(sliders, menus)),
      axes: axes.some(out) || pairs(axes) || any(axes, sliders.concat(menus)),
    };
  }

  function plain(text) { return String(text || "").replace(/<br\s*\/?>/gi, " "); }
  function wrap(text, chars) {
    const words = plain(text).split(/\s+/), lines = [];
    let line = "";
    for (const w of words) {
      if (line && (line + " " + w).length > chars) { lines.push(line); line = w; }
      else line = line ? line + " " + w : w;
    }
    if (line) lines.push(line);
    return lines.join("<br>");
  }

  async function fit(gd) {
    if (gd._qbookFitting || !gd._fullLayout) return;
    // a redraw (slider, menu, our own relayout) fits again, but a figure that cannot be fitted
    // must not redraw forever: at most 3 fits per width
    const w = Math.round(gd.getBoundingClientRect().width);
    if (gd._qbookFitWidth !== w) { gd._qbookFitWidth = w; gd._qbookFits = 0; }
    if (gd._qbookFits >= 3) { gd.setAttribute("data-qbook-fit", "done"); return; }
    gd._qbookFits += 1;
    gd._qbookFitting = true;
    gd.setAttribute("data-qbook-fit", "busy");
    try {
      if (!gd.getBoundingClientRect().width) return;  // hidden (e.g. in a closed solution): fitted when shown
      for (let round = 0; round < 6; round++) {
        const p = problems(gd);
        if (!p.title && !p.subs && !p.legend && !p.axes) break;
        const L = gd._fullLayout, width = gd.getBoundingClientRect().width, upd = {};
        if (p.title && L.title && L.title.text) {
          const size = Math.max(11, Math.round((L.title.font.size || 17) * 0.85));
          const chars = Math.max(16, Math.floor((width - 40) / (size * 0.62) * Math.pow(0.8, round)));
          const text = wrap(L.title.text, chars), lines = text.split("<br>").length;
          Object.assign(upd, { "title.text": text, "title.font.size": size, "title.x": 0.02,
                               "title.xanchor": "left", "title.y": 0.99, "title.yanchor": "top",
                               "margin.t": Math.max(L.margin.t, 30 + lines * size * 1.35 +
                                                     (gd.layout.updatemenus || []).length * 30) });
        }
        if (p.subs) {
          (gd.layout.annotations || []).forEach((a, i) => {
            const size = Math.max(9, Math.round(((a.font && a.font.size) || 16) * 0.8));
            // columns of subplots: distinct horizontal domains of the x axes
            const n = Math.max(1, new Set(Object.keys(L).filter(k => /^xaxis\d*$/.test(k))
                                            .map(k => L[k].domain[0].toFixed(3))).size);
            const chars = Math.max(10, Math.floor(width / n / (size * 0.6)));
            upd[`annotations[${i}].text`] = wrap(a.text, chars);
            upd[`annotations[${i}].font.size`] = size;
          });
          upd["margin.t"] = Math.max(upd["margin.t"] || 0, L.margin.t + 14);
        }
        if (p.legend && L.showlegend !== false) {
          const below = !(gd.layout.sliders || []).length;
          Object.assign(upd, { "legend.orientation": "h", "legend.x": 0, "legend.xanchor": "left",
                               "legend.font.size": 10, "legend.y": below ? -0.25 - 0.05 * round : 1.0,
                               "legend.yanchor": below ? "top" : "bottom" });
          if (below) upd["margin.b"] = L.margin.b + 30;
          else upd["margin.t"] = Math.max(upd["margin.t"] || 0, L.margin.t + 40);
        }
        if (p.axes) {
          for (const k of Object.keys(L)) if (/^[xy]axis\d*$/.test(k) && L[k].title && L[k].title.text) {
            upd[`${k}.title.font.size`] = 11;
            upd[`${k}.title.text`] = wrap(L[k].title.text, Math.max(12, Math.floor(width / 10)));
          }
          if ((gd.layout.sliders || []).length) upd["sliders[0].pad.t"] = ((L.sliders[0].pad || {}).t || 0) + 30;
        }
        await Plotly.relayout(gd, upd);
      }
    } finally {
      gd._qbookFitting = false;
      gd.setAttribute("data-qbook-fit", "done");
    }
  }

  function watch(gd) {
    if (gd._qbookWatched) return;
    gd._qbookWatched = true;
    gd.on("plotly_afterplot", () => setTimeout(() => fit(gd), 0));
    // a slider step or a menu choice shows new titles: fit them afresh
    gd.on("plotly_sliderchange", () => { gd._qbookFits = 0; });
    gd.on("plotly_buttonclicked", () => { gd._qbookFits = 0; });
    fit(gd);
  }

  function all() { document.querySelectorAll(".js-plotly-plot").forEach(gd => { if (gd.on) watch(gd); }); }
  window.addEventListener("load", () => { all(); setTimeout(all, 500); setTimeout(all, 2000); });
  window.addEventListener("resize", () => document.querySelectorAll(".js-plotly-plot").forEach(fit));
})();

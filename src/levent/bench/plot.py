"""The benchmark suite's plot of the TCP-echo results: SVG from the stdlib, PNG with matplotlib.

Small multiples: one panel per cell (message size x concurrency) and metric, each with its own
linear y-axis from 0. Values differ by orders of magnitude between cells, and what the plot is for
is the comparison of contenders within a cell; a shared axis would flatten the small cells, a log
axis would hide the differences that matter. The first block of rows is server CPU time per echo,
the second req/s; every panel has one bar per contender in the figure's contender order (a
contender missing from a cell leaves a gap), with a whisker from the min to the max over repeats.

Both renderers draw from one geometry (``_layout``), so the SVG and the PNG look alike. The module
imports only the stdlib: matplotlib is imported by ``write_plot`` when a PNG is asked for.
"""
from __future__ import annotations

import math
import os
from xml.sax.saxutils import escape

__all__ = ["write_plot", "render_svg"]

# Okabe-Ito, colorblind-safe; black swapped for grey so that whiskers stay visible on every bar, and
# yellow last because it is the weakest against white.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#999999", "#F0E442")

# (key in a result, heading of its block of rows, unit in tooltips)
METRICS = (
    ("cpu_us_per_echo", "server CPU µs per echo (lower is better)", "µs/echo"),
    ("req_s", "req/s (higher is better)", "req/s"),
)

FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
DPI = 100

# Geometry in pixels (the PNG is WIDTH px wide at DPI).
WIDTH = 1400
MARGIN = 24
TITLE_PX, SUBTITLE_PX, LEGEND_PX, HEADING_PX, PANEL_TITLE_PX, TICK_PX = 22, 14, 14, 16, 13, 11
LEGEND_ROW = 24
LEGEND_GAP = 28  # between legend columns
SWATCH = 14
MAX_COLUMNS = 6
MAX_PANEL_W = 360  # a lone panel stays a panel, not a 1350 px wide bar chart
GAP_X, GAP_Y = 18, 12
PANEL_TITLE_H = 24  # above the plot area
AXIS_W = 44  # left of the plot area, for tick labels
PLOT_H = 150
PANEL_BOTTOM = 8
SECTION_HEAD_H = 34
SECTION_GAP = 16
TICKS_WANTED = 4  # intervals on a y-axis, roughly
# Half the height of digits and lowercase, in em: a baseline this far below y centres text on y
# (dominant-baseline is not honoured by every SVG viewer).
_HALF_X = 0.36


def write_plot(path: str, data: dict) -> tuple[str, str | None]:
    """Write the plot to path; return (path actually written, note or None).

    A path ending in .png gets a PNG drawn by matplotlib; without matplotlib the SVG is written next
    to it, to the same path with .svg instead of .png, and the note says so and how to get PNG. Any
    other path (.svg, or no suffix) gets the SVG as it is.
    """
    root, ext = os.path.splitext(path)
    if ext.lower() != ".png":
        _write_text(path, render_svg(data))
        return path, None
    try:
        from matplotlib.figure import Figure
    except ImportError:
        svg_path = root + ".svg"
        _write_text(svg_path, render_svg(data))
        return svg_path, (f"matplotlib is not installed, so the plot was written as SVG to "
                          f"{svg_path} instead of PNG; `pip install matplotlib` (or "
                          "`pip install levent[plot]`) to get PNG")
    _draw_png(Figure, _layout(data), path)
    return path, None


def render_svg(data: dict) -> str:
    """The plot as an SVG document (a str). Bars carry data-* attributes and a <title> tooltip."""
    lay = _layout(data)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width}" height="{lay.height}" '
        f'viewBox="0 0 {lay.width} {lay.height}" font-family="{FONT}">',
        f'<rect width="{lay.width}" height="{lay.height}" fill="white"/>',
        _svg_text(MARGIN, lay.title_y, lay.title, TITLE_PX, weight="bold"),
    ]
    if lay.subtitle:
        out.append(_svg_text(MARGIN, lay.subtitle_y, lay.subtitle, SUBTITLE_PX, fill="#555"))
    out.append('<g class="legend">')
    for item in lay.legend:
        out.append(f'<rect class="swatch" x="{_n(item.x)}" y="{_n(item.y - SWATCH / 2)}" '
                   f'width="{SWATCH}" height="{SWATCH}" fill="{item.color}"/>')
        out.append(_svg_text(item.x + SWATCH + 6, item.y + _HALF_X * LEGEND_PX, item.label,
                             LEGEND_PX))
    out.append('</g>')
    if lay.no_results_y is not None:
        out.append(_svg_text(lay.width / 2, lay.no_results_y, "no results", 20, fill="#777",
                             anchor="middle"))
    for head in lay.headings:
        out.append(_svg_text(MARGIN, head.y, head.text, HEADING_PX, weight="bold"))
    for p in lay.panels:
        out.extend(_svg_panel(p))
    out.append('</svg>')
    return "\n".join(out) + "\n"


# --- geometry shared by both renderers ---

class _Obj:
    """A plain record: _Obj(a=1).a == 1."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _layout(data):
    """Everything's position, from data; both renderers draw exactly this."""
    contenders = []
    for i, c in enumerate(data.get("contenders") or ()):
        name = str(c.get("name", ""))
        contenders.append(_Obj(name=name, label=str(c.get("label") or name),
                               color=PALETTE[i % len(PALETTE)]))
    cells = list(data.get("cells") or ())
    lay = _Obj(width=WIDTH, title=str(data.get("title") or "levent bench"),
               subtitle=str(data.get("subtitle") or ""), legend=[], headings=[], panels=[],
               no_results_y=None, contenders=contenders)

    y = MARGIN + TITLE_PX * 0.6
    lay.title_y = y
    if lay.subtitle:
        y += SUBTITLE_PX + 10
        lay.subtitle_y = y
    y += 14

    # Legend: a grid read row by row, each column as wide as its longest label, with as many columns
    # as fit (matplotlib's legend is laid out the same way).
    lay.legend_top = y
    lay.legend_cols = 0
    if contenders:
        widths = [SWATCH + 6 + _text_w(c.label, LEGEND_PX) + LEGEND_GAP for c in contenders]
        for cols in range(len(contenders), 0, -1):
            col_w = [max(widths[k::cols]) for k in range(cols)]
            if sum(col_w) - LEGEND_GAP <= WIDTH - 2 * MARGIN:
                break
        col_x = [MARGIN + sum(col_w[:k]) for k in range(cols)]
        for i, c in enumerate(contenders):
            r, k = divmod(i, cols)
            lay.legend.append(_Obj(x=col_x[k], y=y + r * LEGEND_ROW + LEGEND_ROW / 2,
                                   label=c.label, color=c.color))
        lay.legend_cols = cols
        y += math.ceil(len(contenders) / cols) * LEGEND_ROW
    y += 10

    if not cells:
        lay.no_results_y = y + 50
        lay.height = int(y + 90)
        return lay

    cols = _columns(cells)
    panel_w = min(MAX_PANEL_W, (WIDTH - 2 * MARGIN - (cols - 1) * GAP_X) / cols)
    panel_h = PANEL_TITLE_H + PLOT_H + PANEL_BOTTOM
    rows = math.ceil(len(cells) / cols)
    for key, heading, unit in METRICS:
        lay.headings.append(_Obj(y=y + HEADING_PX + 6, text=heading))
        y += SECTION_HEAD_H
        for i, cell in enumerate(cells):
            r, k = divmod(i, cols)
            x0 = MARGIN + k * (panel_w + GAP_X)
            y0 = y + r * (panel_h + GAP_Y)
            lay.panels.append(_panel(key, unit, cell, contenders, x0 + AXIS_W, y0 + PANEL_TITLE_H,
                                     panel_w - AXIS_W, PLOT_H))
        y += rows * panel_h + (rows - 1) * GAP_Y + SECTION_GAP
    lay.height = int(math.ceil(y + MARGIN - SECTION_GAP))
    return lay


def _columns(cells):
    """Panels per row: whole sizes per row when each size has as many cells (so that the columns
    line up by concurrency), else as many as fit."""
    n = len(cells)
    counts = {}
    for c in cells:
        counts[c.get("size")] = counts.get(c.get("size"), 0) + 1
    per_size = set(counts.values())
    if len(per_size) == 1:
        k = per_size.pop()
        if k <= MAX_COLUMNS:
            return min(n, k * (MAX_COLUMNS // k))
    return min(n, MAX_COLUMNS)


def _panel(key, unit, cell, contenders, x, y, w, h):
    """One panel: plot area (x, y, w, h), its y-axis and its bars (one slot per contender)."""
    title = _cell_title(cell)
    results = cell.get("results") or {}
    slot = w / max(1, len(contenders))
    bars = []
    for i, c in enumerate(contenders):
        res = results.get(c.name)
        value = _number(res.get(key)) if isinstance(res, dict) else None
        if value is None:
            continue  # skipped or failed in this cell: a gap
        lo, hi = _number(res.get(key + "_min")), _number(res.get(key + "_max"))
        tip = f"{c.label}, {title}: {_fmt_value(key, value)} {unit}"
        if lo is not None and hi is not None:
            tip += f" (min {_fmt_value(key, lo)}, max {_fmt_value(key, hi)})"
        else:
            lo = hi = None
        bars.append(_Obj(index=i, contender=c, value=value, lo=lo, hi=hi, tip=tip,
                         x=x + slot * i + slot * 0.12, w=slot * 0.76))
    top = max([max(b.value, b.hi or 0) for b in bars] or [0])
    ticks = _nice_ticks(top if top > 0 else 1)
    p = _Obj(key=key, title=title, x=x, y=y, w=w, h=h, bars=bars, ticks=ticks,
             tick_labels=_fmt_ticks(key, ticks), ymax=ticks[-1])
    p.ypix = lambda v: y + h - max(0.0, min(v, p.ymax)) / p.ymax * h
    return p


def _nice_ticks(top):
    """Ticks 0, s, 2s, ... up to the first multiple of s at or above top, s a nice 1/2/5 x 10^k."""
    raw = top / TICKS_WANTED
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))
    n = max(1, math.ceil(top / step - 1e-9))
    return [i * step for i in range(n + 1)]


# --- text ---

def _number(x):
    """x as a float if it is a finite real number, else None (missing, None, NaN, a string...)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _cell_title(cell):
    """'64 B × 1 conn', '100 KiB × 100 conns'."""
    size, conns = _number(cell.get("size")), _number(cell.get("conns"))
    if size is None:
        size_s = f"{cell.get('size')} B"
    elif size >= 1 << 20:
        size_s = f"{size / (1 << 20):.3g} MiB"
    elif size >= 1 << 10:
        size_s = f"{size / (1 << 10):.3g} KiB"
    else:
        size_s = f"{size:g} B"
    conns_s = f"{conns:g}" if conns is not None else str(cell.get("conns"))
    return f"{size_s} × {conns_s} conn{'' if conns == 1 else 's'}"


def _fmt_value(key, v):
    """A measured value for a tooltip: '5.30' µs, '180,000' req/s."""
    if key == "req_s":
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return f"{v:.2f}"


def _fmt_ticks(key, ticks):
    """Tick labels: req/s as 12k / 1.2M; CPU µs with as many decimals as the step needs."""
    if key == "req_s":
        return [_si(t) for t in ticks]
    decimals = max(0, -math.floor(math.log10(ticks[1] - ticks[0]) + 1e-9))
    return [f"{t:.{decimals}f}" for t in ticks]


def _si(v):
    """12000 -> '12k', 1200000 -> '1.2M'."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def _text_w(s, px):
    """Estimated width of s in px: generous (DejaVu Sans averages ~0.55 em), nothing overlaps."""
    return len(s) * px * 0.6


# --- SVG ---

def _n(v):
    """A coordinate, short."""
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _attr(s):
    """s escaped for a double-quoted XML attribute."""
    return escape(s, {'"': "&quot;"})


def _svg_text(x, y, s, px, weight=None, fill="#222", anchor=None):
    """A <text> element with its baseline at y."""
    extra = "".join(f' {k}="{v}"' for k, v in (("font-weight", weight), ("text-anchor", anchor))
                    if v)
    return f'<text x="{_n(x)}" y="{_n(y)}" font-size="{px}" fill="{fill}"{extra}>{escape(s)}</text>'


def _svg_panel(p):
    """The SVG lines of one panel: title, y-axis grid and labels, bars with tooltips, whiskers."""
    out = [f'<g class="panel" data-metric="{p.key}" data-cell="{_attr(p.title)}">',
           _svg_text(p.x + p.w / 2, p.y - 8, p.title, PANEL_TITLE_PX, weight="bold",
                     anchor="middle")]
    for t, label in zip(p.ticks, p.tick_labels):
        ty = p.ypix(t)
        color = "#888" if t == 0 else "#e3e3e3"
        out.append(f'<line x1="{_n(p.x)}" y1="{_n(ty)}" x2="{_n(p.x + p.w)}" y2="{_n(ty)}" '
                   f'stroke="{color}" stroke-width="1"/>')
        out.append(_svg_text(p.x - 6, ty + _HALF_X * TICK_PX, label, TICK_PX, fill="#555",
                             anchor="end"))
    if not p.bars:
        out.append(_svg_text(p.x + p.w / 2, p.y + p.h / 2, "no data", PANEL_TITLE_PX, fill="#999",
                             anchor="middle"))
    for b in p.bars:
        top = p.ypix(b.value)
        out.append(f'<rect class="bar" x="{_n(b.x)}" y="{_n(top)}" width="{_n(b.w)}" '
                   f'height="{_n(p.ypix(0) - top)}" fill="{b.contender.color}" '
                   f'data-contender="{_attr(b.contender.name)}" data-value="{b.value!r}">'
                   f'<title>{escape(b.tip)}</title></rect>')
        if b.lo is not None:
            cx, cap = b.x + b.w / 2, min(b.w * 0.3, 5)
            ylo, yhi = p.ypix(b.lo), p.ypix(b.hi)
            out.append(f'<path class="whisker" d="M{_n(cx - cap)} {_n(ylo)}H{_n(cx + cap)}'
                       f'M{_n(cx)} {_n(ylo)}V{_n(yhi)}M{_n(cx - cap)} {_n(yhi)}H{_n(cx + cap)}" '
                       f'stroke="#222" stroke-width="1.3" fill="none"/>')
    out.append('</g>')
    return out


def _write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# --- PNG (matplotlib) ---

def _draw_png(Figure, lay, path):
    """Draw lay with matplotlib at DPI so that 1 px of the layout is 1 px of the PNG.

    A bare Figure, not pyplot: no global backend switch in the caller's process and no figure left
    registered with pyplot (nothing to close).
    """
    from matplotlib.patches import Patch

    fig = Figure(figsize=(lay.width / DPI, lay.height / DPI), dpi=DPI, facecolor="white")
    pt = 72 / DPI  # matplotlib sizes fonts in points

    def fx(x):
        return x / lay.width

    def fy(y):
        return 1 - y / lay.height

    def text(x, y, s, px, **kw):
        fig.text(fx(x), fy(y), _mpl(s), fontsize=px * pt, **kw)

    text(MARGIN, lay.title_y, lay.title, TITLE_PX, weight="bold", va="center")
    if lay.subtitle:
        text(MARGIN, lay.subtitle_y, lay.subtitle, SUBTITLE_PX, color="#555", va="center")
    if lay.contenders:
        handles = [Patch(facecolor=c.color, label=_mpl(c.label)) for c in lay.contenders]
        fig.legend(handles=_column_major(handles, lay.legend_cols), ncol=lay.legend_cols,
                   loc="upper left", bbox_to_anchor=(fx(MARGIN - 8), fy(lay.legend_top)),
                   frameon=False, fontsize=LEGEND_PX * pt, handlelength=1.0, handleheight=1.0,
                   columnspacing=2.0, borderaxespad=0)
    if lay.no_results_y is not None:
        text(lay.width / 2, lay.no_results_y, "no results", 20, color="#777", ha="center",
             va="center")
    for head in lay.headings:
        text(MARGIN, head.y, head.text, HEADING_PX, weight="bold", va="baseline")
    n = len(lay.contenders)
    for p in lay.panels:
        ax = fig.add_axes((fx(p.x), fy(p.y + p.h), p.w / lay.width, p.h / lay.height))
        ax.set_title(_mpl(p.title), fontsize=PANEL_TITLE_PX * pt, weight="bold", pad=5)
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_xticks([])
        ax.set_ylim(0, p.ymax)
        ax.set_yticks(p.ticks)
        ax.set_yticklabels(p.tick_labels, fontsize=TICK_PX * pt, color="#555")
        ax.tick_params(axis="y", length=0)
        ax.yaxis.grid(True, color="#e3e3e3", linewidth=1)
        ax.set_axisbelow(True)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        ax.spines["bottom"].set_color("#888")
        if not p.bars:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center",
                    fontsize=PANEL_TITLE_PX * pt, color="#999")
        for b in p.bars:
            ax.bar(b.index, b.value, width=0.76, color=b.contender.color)
            if b.lo is not None:
                yerr = [[max(0.0, b.value - b.lo)], [max(0.0, b.hi - b.value)]]
                ax.errorbar(b.index, b.value, yerr=yerr, fmt="none", ecolor="#222", elinewidth=1.3,
                            capsize=3)
    fig.savefig(path, dpi=DPI, format="png")


def _mpl(s):
    """s as literal matplotlib text: a '$' would start mathtext."""
    return s.replace("$", r"\$")


def _column_major(items, cols):
    """Reorder items so that matplotlib's column-by-column legend reads by rows like the SVG's."""
    rows = math.ceil(len(items) / cols)
    return [items[r * cols + k] for k in range(cols) for r in range(rows)
            if r * cols + k < len(items)]

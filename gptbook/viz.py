"""Plotting helpers the chapters share. Each returns the matplotlib Figure; no global state."""
from __future__ import annotations

import matplotlib

matplotlib.use(matplotlib.get_backend() if "inline" in matplotlib.get_backend() else "Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Chinese in plots: matplotlib's default font has no CJK glyphs (every character becomes a box), so
# the first installed CJK family, if any, goes in front of the sans-serif list. `gptbook doctor`
# says how to install one when there is none.
CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
                "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "AR PL UMing CN")


def cjk_font(installed=None):
    """The name of an installed font family that can draw Chinese, or None."""
    if installed is None:
        from matplotlib import font_manager
        installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FAMILIES if name in installed), None)


if cjk_font():
    matplotlib.rcParams["font.sans-serif"] = [cjk_font(), *matplotlib.rcParams["font.sans-serif"]]
    matplotlib.rcParams["axes.unicode_minus"] = False   # CJK fonts often lack U+2212 (the minus sign)


MAX_MARKERS = 40      # plot_curves draws a marker per point up to this many x values, a bare line above


def plot_losses(history, title: str = "Training and validation loss", ax=None):
    """Loss per step (train) and per evaluation (val) from a gptbook.train.History."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    ax.plot(history.steps, history.train_loss, lw=1, alpha=0.7, label="train (per step)")
    if history.val_loss:
        ax.plot(history.val_steps, history.val_loss, "o-", label="validation")
    ax.set(xlabel="optimizer step", ylabel="cross-entropy loss (nats/token)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_attention(att, tokens=None, title: str = "Attention weights", ax=None):
    """Heatmap of one (T, T) attention matrix: row = query position, column = key position."""
    att = att.detach().cpu().float().numpy() if hasattr(att, "detach") else att
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(att, cmap="viridis", vmin=0.0)
    if tokens is not None:
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
    ax.set(xlabel="key position (attended to)", ylabel="query position (attending)", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="weight")
    fig.tight_layout()
    return fig


def plot_curves(xs, curves: dict, xlabel: str, ylabel: str, title: str = "", logx=False, ax=None,
                errors: dict = None):
    """Several named y-series over the same x values (sweeps, latency vs length, ...); `errors`
    {name: half-widths} draws error bars (e.g. two standard errors over seeds). Each point gets a
    marker up to MAX_MARKERS x values; denser series (a function on a fine grid) are bare lines."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    style = "o-" if len(xs) <= MAX_MARKERS else "-"     # a marker on each of hundreds of points is a smear
    for name, ys in curves.items():
        if errors and name in errors:
            ax.errorbar(xs, ys, yerr=errors[name], fmt=style, capsize=3, label=name)
        else:
            ax.plot(xs, ys, style, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_bars(labels, values, xlabel: str, title: str = "", errors=None, ax=None):
    """One horizontal bar per label (long labels stay readable on the y axis), each with its value
    written at its end; `errors` (half-widths) draws error bars."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 0.45 * len(labels) + 1.2))
    rows = range(len(labels))
    ax.barh(rows, values, xerr=errors, capsize=3 if errors is not None else 0, color="tab:blue")
    ax.set_yticks(list(rows), list(labels))
    ax.invert_yaxis()                                   # first label on top, as in a table
    for i, v in enumerate(values):
        ax.annotate(f"{v:.4g}", (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlim(0, max(values) * 1.15)                  # room for the last value's text
    ax.set(xlabel=xlabel, title=title)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def plot_intervals(labels, series: dict, xlabel: str, ylabel: str = "", title: str = "", ref=None, ax=None):
    """A forest plot: for each label (top to bottom as given) one point per series with its interval as a
    horizontal line. series {name: (values, lower, upper)}, each a sequence over the labels; several
    series sit side by side around their label. `ref` draws a vertical line (0 for a difference)."""
    import numpy as np
    height = 0.5 * len(labels) * max(1.0, len(series) ** 0.5) + 1.3
    width = 7 + (2.5 if len(series) > 1 else 0)       # room for the legend beside the axes
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(width, height))
    offsets = np.linspace(-0.15, 0.15, len(series)) if len(series) > 1 else [0.0]
    for off, (name, (v, lo, hi)) in zip(offsets, series.items()):
        v, lo, hi = (np.asarray(a, dtype=float) for a in (v, lo, hi))
        ax.errorbar(v, np.arange(len(labels)) + off, xerr=[v - lo, hi - v], fmt="o", capsize=3, label=name)
    if ref is not None:
        ax.axvline(ref, color="k", lw=1)
    ax.set_yticks(range(len(labels)), list(labels))
    ax.invert_yaxis()                                   # first label on top, as in a table
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, axis="x")
    if len(series) > 1:
        legend_outside(ax)
    fig.tight_layout()
    return fig


def label_points(ax, xs, ys, labels, fontsize: float = 7, steps=(6, 12, 18, 28, 40, 54)):
    """Write `labels[i]` next to the point (xs[i], ys[i]) so that no two labels overlap, no label
    covers a point, and every label stays inside the axes: each label takes the first free spot
    of 8 directions around its point at growing distances (in points); a label set off its point
    gets a thin line to it. Call it after the axes' scales, limits and layout are final (it measures
    the text as drawn). Returns the Annotations."""
    import numpy as np
    from matplotlib.transforms import Bbox
    fig = ax.figure
    ax.autoscale_view()
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    px = fig.dpi / 72.0                                           # display pixels per point
    pts = ax.transData.transform(np.column_stack([np.asarray(xs, float), np.asarray(ys, float)]))
    r = 3.5 * px                                                  # a scatter marker's radius
    taken = [Bbox.from_extents(x - r, y - r, x + r, y + r) for x, y in pts]
    dirs = [(1, 0, "left", "center"), (-1, 0, "right", "center"), (0, 1, "center", "bottom"),
            (0, -1, "center", "top"), (1, 1, "left", "bottom"), (-1, 1, "right", "bottom"),
            (1, -1, "left", "top"), (-1, -1, "right", "top")]

    def cost(box):
        """Overlap area with what is already taken, plus any part outside the axes."""
        over = sum(max(0.0, min(box.x1, t.x1) - max(box.x0, t.x0)) * max(0.0, min(box.y1, t.y1) - max(box.y0, t.y0))
                   for t in taken)
        out = box.width * box.height - (max(0.0, min(box.x1, inside.x1) - max(box.x0, inside.x0)) *
                                        max(0.0, min(box.y1, inside.y1) - max(box.y0, inside.y0)))
        return over + out

    made = []
    # the most crowded points choose first, while there is still room around them
    crowd = [sum(np.hypot(*(pts[i] - pts[j])) < 60 * px for j in range(len(pts))) for i in range(len(pts))]
    for i in sorted(range(len(pts)), key=lambda i: -crowd[i]):
        best = None
        for dist in steps:
            for dx, dy, ha, va in dirs:
                off = (dx * dist / (2 ** 0.5 if dx and dy else 1), dy * dist / (2 ** 0.5 if dx and dy else 1))
                ann = ax.annotate(labels[i], (xs[i], ys[i]), xytext=off, textcoords="offset points",
                                  ha=ha, va=va, fontsize=fontsize)
                box = ann.get_window_extent(renderer).padded(1.5 * px)
                ann.remove()
                c = cost(box)
                if best is None or c < best[0]:
                    best = (c, off, ha, va, box)
                if c == 0:
                    break
            if best[0] == 0:
                break
        _, off, ha, va, box = best
        far = max(abs(off[0]), abs(off[1])) > steps[0] + 1
        made.append(ax.annotate(labels[i], (xs[i], ys[i]), xytext=off, textcoords="offset points",
                                ha=ha, va=va, fontsize=fontsize,
                                arrowprops=dict(arrowstyle="-", lw=0.5, color="0.5", shrinkA=1, shrinkB=3)
                                if far else None))
        taken.append(box)
    return made


def plot_labelled_points(xs, ys, labels, xlabel: str, ylabel: str, title: str = "", logx=False,
                         figsize=(6, 3.8), fontsize: float = 7):
    """A scatter plot with a readable label beside each point (label_points: no overlaps)."""
    import numpy as np
    fig, ax = plt.subplots(figsize=figsize)
    for x, y in zip(xs, ys):
        ax.scatter(x, y)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    # room for the labels of the outermost points inside the axes
    lx = np.log10(xs) if logx else np.asarray(xs, float)
    pad = 0.3 * (lx.max() - lx.min() or 1.0)
    lo, hi = lx.min() - pad, lx.max() + pad
    ax.set_xlim(*((10 ** lo, 10 ** hi) if logx else (lo, hi)))
    span = (max(ys) - min(ys)) or 1.0
    ax.set_ylim(min(ys) - 0.12 * span, max(ys) + 0.15 * span)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    label_points(ax, xs, ys, labels, fontsize=fontsize)
    return fig


def legend_outside(ax, title=None):
    """Move the axes' legend to the right of the plot, where it cannot cover a bar or a line."""
    handles, names = ax.get_legend_handles_labels()
    if title is None and ax.get_legend() is not None:
        title = ax.get_legend().get_title().get_text() or None
    leg = ax.legend(handles, names, title=title, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                    borderaxespad=0.0, frameon=False)
    ax.figure.tight_layout()
    return leg


def plot_confusion(cm, labels, title: str = "Confusion matrix", ax=None):
    """Confusion matrix with counts in the cells: row = true class, column = predicted class."""
    import numpy as np
    cm = np.asarray(cm)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4, 3.5))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.tight_layout()
    return fig


def table(rows, columns=None):
    """A list of dicts (or tuples + columns) -> pandas DataFrame for display."""
    import pandas as pd
    return pd.DataFrame(rows, columns=columns)


def show(obj, markdown: bool = False) -> None:
    """Display `obj` in IPython/Jupyter (a str as rendered Markdown when markdown=True), print it
    elsewhere (a script, a test); never raises for want of a display."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
        if get_ipython() is not None:
            display(Markdown(obj) if markdown else obj)
            return
    except ImportError:  # no IPython: plain text
        pass
    print(obj)

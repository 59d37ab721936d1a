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
    {name: half-widths} draws error bars (e.g. two standard errors over seeds)."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    for name, ys in curves.items():
        if errors and name in errors:
            ax.errorbar(xs, ys, yerr=errors[name], fmt="o-", capsize=3, label=name)
        else:
            ax.plot(xs, ys, "o-", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


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

"""Plot helpers: no per-point markers on dense curves, labels that do not overlap, legends off the data."""
import pytest

pytest.importorskip("matplotlib")
from gptbook import viz  # noqa: E402


def test_dense_curves_are_bare_lines_sparse_ones_keep_markers():
    import matplotlib.pyplot as plt
    dense = [i / 20 for i in range(161)]                    # chapter 01's GELU grid
    fig = viz.plot_curves(dense, {"a": dense, "b": [x * x for x in dense]}, "x", "y")
    assert all(line.get_marker() in ("None", None, "") for line in fig.axes[0].get_lines())
    fig2 = viz.plot_curves([1, 2, 3], {"a": [1, 4, 9]}, "x", "y", errors={"a": [0.1, 0.1, 0.1]})
    assert fig2.axes[0].get_lines()[0].get_marker() == "o"
    plt.close("all")


# chapter 04's sampling grid: perplexity, distinct-2 and the settings (four points crowd near 100-200)
GRID = [(17.265, 0.021, "temperature=0.0"), (56.4, 0.795, "temperature=0.7"),
        (189.209, 0.936, "temperature=1.0"), (601.08, 0.979, "temperature=1.3"),
        (21.649, 0.598, "temperature=1.0, top_k=10"), (130.89, 0.922, "temperature=1.0, top_p=0.9"),
        (102.004, 0.936, "temperature=0.7, repetition_penalty=1.3"),
        (9.829, 0.130, "temperature=0.0, repetition_penalty=1.3")]


def _overlap(a, b):
    return min(a.x1, b.x1) > max(a.x0, b.x0) and min(a.y1, b.y1) > max(a.y0, b.y0)


def test_point_labels_do_not_overlap_each_other_or_the_points_and_stay_inside():
    import matplotlib.pyplot as plt
    xs, ys, labels = zip(*GRID)
    fig = viz.plot_labelled_points(xs, ys, labels, "perplexity", "distinct-2", logx=True)
    ax = fig.axes[0]
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    texts = [t for t in ax.texts]
    assert sorted(t.get_text() for t in texts) == sorted(labels)
    boxes = [t.get_window_extent(r) for t in texts]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not _overlap(boxes[i], boxes[j]), (texts[i].get_text(), texts[j].get_text())
    inside = ax.get_window_extent(r)
    for b in boxes:
        assert inside.x0 <= b.x0 and b.x1 <= inside.x1 and inside.y0 <= b.y0 and b.y1 <= inside.y1
    for (x, y), b in zip(ax.transData.transform(list(zip(xs, ys))), boxes):
        assert not b.contains(x, y)
    plt.close("all")


def test_legend_outside_covers_no_bar():
    import matplotlib.pyplot as plt
    import pandas as pd
    recall = pd.DataFrame({"MiniLM": [0.40, 0.91], "TF-IDF": [0.89, 0.86]}, index=["chinese", "english"])
    ax = recall.plot.bar(rot=0, figsize=(5, 3))
    ax.set(ylim=(0, 1))
    leg = viz.legend_outside(ax, title="retriever")
    fig = ax.figure
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    lb = leg.get_window_extent(r)
    assert lb.x0 >= ax.get_window_extent(r).x1                    # right of the plotting area
    assert not any(_overlap(lb, bar.get_window_extent(r)) for bar in ax.patches)
    assert leg.get_title().get_text() == "retriever" and len(leg.get_texts()) == 2
    plt.close("all")


def test_bars_show_every_label_and_value():
    fig = viz.plot_bars(["a long label", "b"], [3.0, 12.5], "perplexity", "t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a long label", "b"]
    assert [t.get_text() for t in ax.texts] == ["3", "12.5"]
    assert ax.get_xlim()[1] > 12.5 and ax.get_xlabel() == "perplexity"


def test_intervals_draw_each_series_around_its_label():
    import matplotlib.pyplot as plt
    series = {"x": ([1.0, 2.0], [0.5, 1.5], [1.5, 3.0]), "y": ([0.0, 1.0], [-1.0, 0.5], [1.0, 2.0])}
    fig = viz.plot_intervals(["a", "b"], series, "value", "label", "t", ref=0)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"] and ax.get_xlabel() == "value"
    lines = [c for c in ax.containers]                             # one errorbar container per series
    assert len(lines) == 2 and ax.get_legend() is not None
    x, y = lines[0].lines[0].get_data()
    assert list(x) == [1.0, 2.0] and y[0] < 0 < y[1]               # series x sits above its label's centre
    plt.close("all")

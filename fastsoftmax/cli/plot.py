"""The bar chart of ``fastsoftmax bench --plot``: GB/s per shape and implementation."""

import numpy as np
from matplotlib.figure import Figure


def bar_chart(results, path, title):
    """Draw one panel per op, grouped bars per shape, and save it as an image.

    Parameters
    ----------
    results : list of bench.Result
        Successful measurements.
    path : str
        Where to write the image; the format follows its suffix (``.png``).
    title : str
        The figure's title.
    """
    ops = list(dict.fromkeys(r.op for r in results))
    names = list(dict.fromkeys(r.name for r in sorted(results, key=lambda r: not r.ours)))
    peers = {r.name for r in results if not r.ours}
    figure = Figure(figsize=(10, 3.2 * len(ops)), layout="constrained")
    axes = figure.subplots(len(ops), 1, squeeze=False)[:, 0]
    width = 0.8 / len(names)
    for ax, op in zip(axes, ops):
        shapes = list(dict.fromkeys(r.shape for r in results if r.op == op))
        for i, name in enumerate(names):
            speed = {r.shape: r.gb_per_s for r in results if r.op == op and r.name == name}
            heights = [speed.get(shape, 0.0) for shape in shapes]
            positions = np.arange(len(shapes)) + (i - (len(names) - 1) / 2) * width
            hatch, label = ("//", f"{name} (peer)") if name in peers else (None, name)
            ax.bar(positions, heights, width, label=label, color=f"C{i}", hatch=hatch)
        ax.set_xticks(np.arange(len(shapes)), [f"{r}x{c}" for r, c in shapes])
        ax.set_ylabel("GB/s")
        ax.set_title(op)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncols=min(len(names), 4), fontsize="small")
    figure.suptitle(title)
    figure.savefig(path, dpi=100)

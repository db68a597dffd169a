"""The one plotting style: colour-vision-deficiency-safe colours, a light grid below the data, labelled axes.

Categories use the Okabe–Ito palette; magnitudes (feature maps, counts) the sequential viridis; signed
quantities the diverging RdBu. Every figure states its point in its title.
"""

from __future__ import annotations

import os

import matplotlib
from cycler import cycler

# Files only, the same output everywhere — unless a backend was chosen: a Jupyter kernel sets MPLBACKEND to its
# inline backend, so `run.plot()` shows its figure in the notebook.
if not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
SEQUENTIAL = "viridis"
DIVERGING = "RdBu_r"

RC = {
    "figure.dpi": 110, "savefig.dpi": 110, "savefig.bbox": "tight",
    "font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold", "axes.labelsize": 10,
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "axes.grid": True, "axes.axisbelow": True, "grid.color": "#dddddd", "grid.linewidth": 0.6,
    "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    "image.cmap": SEQUENTIAL,
}


def figure(*args, **kwargs):
    """plt.subplots in kiln's style."""
    with plt.rc_context(RC):
        return plt.subplots(*args, **kwargs)


def save(fig, path, formats: tuple[str, ...] = ("png",)) -> list:
    out = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(RC):  # type: ignore[arg-type]  # matplotlib types keys as literals
        for fmt in formats:
            target = path.with_suffix("." + fmt)
            fig.savefig(target)
            out.append(target)
    plt.close(fig)
    return out

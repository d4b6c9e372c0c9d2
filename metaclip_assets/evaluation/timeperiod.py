"""TiC-CLIP's per-time-period evaluation: every snapshot's model on every snapshot's held-out set.

Rows are models (trained up to snapshot i), columns eval sets (held out from snapshot j), both in time order up to
the snapshot being evaluated. Below the diagonal (j < i) is backward transfer, how much of the past a model kept;
the diagonal is in-distribution; above it (j > i) forward transfer, an older model on newer data. The cell
(previous model, current eval set) is what the `no_regression` check compares against.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable


def compute_matrix(
    models: dict[str, str],
    eval_sets: dict[str, object],
    score: Callable[[str, object], float],
) -> dict:
    """models: snapshot -> checkpoint; eval_sets: snapshot -> eval set; score(checkpoint, eval set) -> value.

    Cells are computed model by model so each checkpoint is loaded once (see runner's model cache).
    """
    rows, cols = sorted(models), sorted(eval_sets)
    values = [[score(models[r], eval_sets[c]) for c in cols] for r in rows]
    return {"rows": rows, "cols": cols, "values": values}


def summary(matrix: dict, current: str) -> dict[str, float | None]:
    """TiC-CLIP's numbers for the current model, plus the forgetting of each older eval set.

    in_distribution: current model on current data; backward_transfer: mean over older eval sets;
    forward_transfer: mean over all (model i, eval j > i) cells; forgetting: mean over older eval sets j of
    (best score any earlier model i >= j had on j) - (current model's score on j).
    """
    rows, cols, v = matrix["rows"], matrix["cols"], matrix["values"]
    at = {(r, c): v[i][j] for i, r in enumerate(rows) for j, c in enumerate(cols)}

    def mean(xs):
        xs = [x for x in xs if x is not None and math.isfinite(x)]
        return sum(xs) / len(xs) if xs else None

    older = [c for c in cols if c < current]
    forgetting = []
    for c in older:
        earlier = [at[(r, c)] for r in rows if c <= r < current]
        if earlier and (current, c) in at:
            forgetting.append(max(earlier) - at[(current, c)])
    return {
        "in_distribution": at.get((current, current)),
        "backward_transfer": mean(at.get((current, c)) for c in older),
        "forward_transfer": mean(at[(r, c)] for r in rows for c in cols if c > r),
        "forgetting": mean(forgetting),
    }


def markdown(matrix: dict, current: str | None = None, metric: str = "top1") -> str:
    cols = matrix["cols"]
    lines = [f"| model \\ eval ({metric}) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r, row in zip(matrix["rows"], matrix["values"]):
        cells = [("—" if x is None else f"{100 * x:.1f}%") for x in row]
        name = f"**{r}**" if r == current else r
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def heatmap_png(matrix: dict, metric: str = "top1", title: str | None = None) -> bytes:
    """A small annotated heat map (PNG bytes): small enough to inline in asset metadata."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt
    import numpy as np

    rows, cols = matrix["rows"], matrix["cols"]
    data = np.array([[np.nan if x is None else x for x in row] for row in matrix["values"]], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(cols), 1.0 + 0.6 * len(rows)), dpi=80)
    try:
        im = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_xlabel("eval set (snapshot)", fontsize=8)
        ax.set_ylabel("model (trained up to)", fontsize=8)
        for i in range(len(rows)):
            for j in range(len(cols)):
                if not np.isnan(data[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{100 * data[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if data[i, j] > 0.6 else "white",
                    )
        ax.set_title(title or f"zero-shot {metric}", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()

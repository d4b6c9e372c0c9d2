"""The data card: what a curated snapshot contains, as MetaCLIP publishes it, plus what a reviewer needs.

MetaCLIP's data card is a flat JSON ``{entry string: count}``. We write that twice (before and after balancing)
and add a summary: the funnel from records read to pairs curated, bad records by reason, t, the tail share, head
and tail tables, and the paper's plot (cumulative matches over entries sorted by frequency, before vs after).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from metaclip_assets.crawl.pool import OTHER_SKIPS, SKIP_REASONS
from metaclip_assets.curation.balancing import tail_share

HEAD_ROWS = 20


@dataclass
class DataCard:
    snapshot: str
    metadata_sha256: str
    t: float
    seed: int
    count_mode: str
    funnel: dict[str, int | float]
    bad_records: dict[str, int]
    other_skipped: dict[str, int]  # not errors: non-HTML captures, image links without text, data: URIs
    entries_total: int
    entries_matched: int
    entries_curated: int
    head_entries: int  # entries with count >= t: the ones balancing cuts
    tail_share_before: float
    tail_share_after: float
    head_table: list[dict] = field(default_factory=list)
    tail_table: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return asdict(self)


def entry_count_mapping(entries: Sequence[str], counts: np.ndarray) -> dict[str, int]:
    """MetaCLIP's data-card format: entry string -> count, only entries with a count, most frequent first."""
    nz = np.flatnonzero(counts)
    order = nz[np.lexsort((nz, -counts[nz].astype(np.int64)))]
    return {entries[i]: int(counts[i]) for i in order}


def build_datacard(
    *,
    snapshot: str,
    entries: Sequence[str],
    metadata_sha256: str,
    counts_before: np.ndarray,
    counts_after: np.ndarray,
    balance_counts: np.ndarray,
    t: float,
    seed: int,
    count_mode: str,
    funnel: dict[str, int | float],
    bad_records: dict[str, int],
    other_skipped: dict[str, int] | None = None,
) -> DataCard:
    """``balance_counts`` are the counts balancing used (per snapshot, or cumulative over snapshots)."""
    if not (len(entries) == len(counts_before) == len(counts_after) == len(balance_counts)):
        raise ValueError("entries and count arrays must have the same length")
    before = counts_before.astype(np.int64)
    after = counts_after.astype(np.int64)
    order = np.lexsort((np.arange(len(before)), -before))
    head = [i for i in order[:HEAD_ROWS] if before[i] > 0]
    head_table = [
        {
            "entry": entries[i],
            "before": int(before[i]),
            "after": int(after[i]),
            "kept": round(int(after[i]) / int(before[i]), 4) if before[i] else 0.0,
        }
        for i in head
    ]
    # Tail: the rarest matched entries, which balancing must keep whole.
    matched_ids = np.flatnonzero(before)
    rare = matched_ids[np.lexsort((matched_ids, before[matched_ids]))][:HEAD_ROWS]
    tail_table = [{"entry": entries[i], "before": int(before[i]), "after": int(after[i])} for i in rare]
    return DataCard(
        snapshot=snapshot,
        metadata_sha256=metadata_sha256,
        t=float(t),
        seed=seed,
        count_mode=count_mode,
        funnel=funnel,
        bad_records=dict(sorted(bad_records.items())),
        other_skipped=dict(sorted((other_skipped or {}).items())),
        entries_total=len(entries),
        entries_matched=int((before > 0).sum()),
        entries_curated=int((after > 0).sum()),
        head_entries=int((balance_counts >= t).sum()),
        tail_share_before=float(tail_share(counts_before, t)),
        tail_share_after=float(tail_share(counts_after, t)),
        head_table=head_table,
        tail_table=tail_table,
    )


def _md_table(rows: list[dict]) -> str:
    if not rows:
        return "_(none)_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def reason_rows(counts: dict[str, int], reasons: Sequence[str], column: str) -> list[dict]:
    """One row per reason in `reasons` (zero counts too, so a reader sees what was checked for), then any other
    reason in `counts`: nothing counted is left out of the card."""
    keys = [*reasons, *sorted(set(counts) - set(reasons))]
    return [{"reason": k, column: counts.get(k, 0)} for k in keys]


def datacard_markdown(card: DataCard, plot_uri: str | None = None) -> str:
    f = card.funnel
    funnel_rows = [{"stage": k, "count": v} for k, v in f.items()]
    parts = [
        f"# Data card: {card.snapshot}\n",
        f"t = **{card.t:g}** (count mode: {card.count_mode}), seed {card.seed}, metadata `{card.metadata_sha256[:12]}` "
        f"({card.entries_total:,} entries).\n",
        f"Entries matched: **{card.entries_matched:,}**; kept after balancing: **{card.entries_curated:,}**; "
        f"head entries (count >= t): **{card.head_entries:,}**.\n",
        f"Tail share (matches on entries with count < t): before {card.tail_share_before:.1%}, "
        f"after {card.tail_share_after:.1%}.\n",
        "## Funnel\n",
        _md_table(funnel_rows),
        "## Bad records (skipped, by reason)\n",
        _md_table(reason_rows(card.bad_records, SKIP_REASONS, "records")),
        "## Skipped but not errors\n",
        _md_table(reason_rows(card.other_skipped, OTHER_SKIPS, "count")),
        f"## Head: the {HEAD_ROWS} most frequent entries\n",
        _md_table(card.head_table),
        f"## Tail: the {HEAD_ROWS} rarest matched entries\n",
        _md_table(card.tail_table),
    ]
    if plot_uri:
        parts += ["## Cumulative matches over entries\n", f"![cumulative matches]({plot_uri})\n"]
    return "\n".join(parts)


def cumulative_plot_png(counts_before: np.ndarray, counts_after: np.ndarray, t: float, title: str) -> bytes:
    """The paper's figure: cumulative share of matches over entries sorted by frequency, before vs after."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for counts, label in ((counts_before, "before balancing (matched pool)"), (counts_after, "after balancing")):
        c = np.sort(counts[counts > 0].astype(np.float64))[::-1]
        if len(c) == 0:
            continue
        ax.plot(np.arange(1, len(c) + 1), np.cumsum(c) / c.sum(), label=f"{label}: {int(c.sum()):,} matches")
    n_head = int((counts_before >= t).sum())
    if n_head:
        ax.axvline(n_head, color="grey", linestyle="--", linewidth=1, label=f"{n_head:,} entries with count >= t={t:g}")
    ax.set_xscale("log")
    ax.set_xlabel("entries sorted by frequency (log scale)")
    ax.set_ylabel("cumulative share of matches")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()

"""Results of runs as Markdown tables."""

from __future__ import annotations

import math
from collections.abc import Sequence


def format_value(v) -> str:
    """A table cell: floats with 4 significant digits (whole numbers from 10^4 on), ``-`` for
    ``None``, anything else as ``str``."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def results_table(rows: Sequence[dict], columns: Sequence[str | tuple[str, str]]) -> str:
    """A Markdown table with a row per dict of ``rows`` and a column per key of ``columns``; a
    column is a key or a ``(key, header)`` pair. Missing keys give ``-``; cells are padded so that
    the text lines up."""
    cols = [(c, c) if isinstance(c, str) else tuple(c) for c in columns]
    header = [h for _, h in cols]
    body = [[format_value(r.get(k)) for k, _ in cols] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(b) for b in body])


#: The headline figures of a run (``sg.evaluate_model``'s and the trainer's), in the order that
#: :func:`metrics_table` lists them.
HEADLINE_METRICS = tuple(
    """test_bpd test_bpd_se test_bpd_bound test_bpd_bound_se test_nll_nats test_nll_nats_se kl_gap_nats fd
    fd_reference kid precision recall class_accuracy energy_distance energy_distance_reference
    likelihood_nfe sample_nfe final_loss train_seconds autoencoder_seconds first_stage_seconds sample_seconds
    likelihood_seconds
    step""".split()
)


def metrics_table(metrics: dict, title: str = "") -> str:
    """A two-column Markdown table (metric, value) of the :data:`HEADLINE_METRICS` that ``metrics``
    holds, in that order, under the line ``title`` if one is given (what ``run.py`` prints)."""
    rows = [{"metric": k, "value": metrics[k]} for k in HEADLINE_METRICS if k in metrics]
    return "\n".join([title] * bool(title) + [results_table(rows, ["metric", "value"])])

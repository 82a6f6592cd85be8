"""Plotly figures from a run's metrics.jsonl records."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go


def loss_figure(metrics: list[dict[str, Any]], t) -> go.Figure:
    """Train loss (line + markers, so even one point shows) and eval loss by step."""
    figure = go.Figure()
    train = [(m["step"], m["loss"]) for m in metrics if m.get("loss") is not None]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None]
    if train:
        figure.add_trace(go.Scatter(x=[s for s, _ in train], y=[v for _, v in train], mode="lines+markers",
                                    name=t("loss"), marker={"size": 4}))
    if evals:
        figure.add_trace(go.Scatter(x=[s for s, _ in evals], y=[v for _, v in evals], mode="lines+markers",
                                    name=t("eval_loss"), marker={"size": 7, "symbol": "diamond"}))
    if not train and not evals:
        figure.add_annotation(text=t("waiting_first_step"), showarrow=False, x=0.5, y=0.5, xref="paper",
                              yref="paper")
    if evals:  # perplexity of the validation set on a second axis
        figure.add_trace(go.Scatter(x=[s for s, _ in evals], y=[round(math.exp(min(v, 50)), 3) for _, v in evals],
                                    mode="lines+markers", name=t("perplexity"), yaxis="y2", visible="legendonly"))
        figure.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": t("perplexity")})
    figure.update_layout(title=t("chart_loss"), xaxis_title=t("step"), height=340,
                         margin={"l": 50, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2},
                         template="plotly_white")
    return figure


def length_histogram(lengths: list[int], cutoff_len: int, t) -> go.Figure:
    """Token lengths of the samples, with cutoff_len marked and the number it would truncate in the title."""
    truncated = sum(length > cutoff_len for length in lengths)
    figure = go.Figure(go.Histogram(x=lengths, nbinsx=min(50, max(5, len(set(lengths)))), name=t("tokens")))
    figure.add_vline(x=cutoff_len, line_dash="dash", line_color="#dc2626",
                     annotation_text=f"cutoff_len={cutoff_len}", annotation_position="top right")
    longest = max(lengths) if lengths else 0
    title = t("length_title", count=len(lengths), longest=longest, truncated=truncated, cutoff=cutoff_len)
    figure.update_layout(title=title, xaxis_title=t("tokens"), yaxis_title=t("samples"), height=300,
                         margin={"l": 50, "r": 20, "t": 50, "b": 40}, template="plotly_white", bargap=0.05)
    return figure


def overlay_figure(metrics_by_run: dict[str, list[dict[str, Any]]], t) -> go.Figure:
    """Training (and eval) loss of several runs on one chart."""
    figure = go.Figure()
    for name, metrics in metrics_by_run.items():
        train = [(m["step"], m["loss"]) for m in metrics if m.get("loss") is not None]
        evals = [(m["step"], m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None]
        figure.add_trace(go.Scatter(x=[s for s, _ in train], y=[v for _, v in train], mode="lines", name=name))
        if evals:
            figure.add_trace(go.Scatter(x=[s for s, _ in evals], y=[v for _, v in evals], mode="markers",
                                        name=f"{name} ({t('eval_loss')})"))
    figure.update_layout(title=t("runs_compare"), xaxis_title=t("step"), yaxis_title=t("loss"), height=380,
                         template="plotly_white", margin={"l": 50, "r": 20, "t": 50, "b": 40},
                         legend={"orientation": "h", "y": -0.25})
    return figure

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

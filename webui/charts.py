"""Plotly figures from a run's metrics.jsonl records.

A panel without data shows a sentence, never empty axes (plotly's default -1..6 range reads as a broken chart);
the loss axis turns logarithmic when the loss spans more than a decade, where a linear axis shows a flat line.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

LOG_SCALE_SPAN = 10.0  # max/min of the loss beyond which a log axis is the default
# Plotly's toolbar speaks English only and the charts need none of it: hovering shows the values.
NO_TOOLBAR = ["zoom", "pan", "select", "lasso", "zoomin", "zoomout", "autoscale", "resetscale", "toimage"]


def smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """TensorBoard-style exponential moving average, debiased so the first points are not pulled to zero."""
    result, average = [], 0.0
    for index, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        result.append(average / (1 - weight**index))
    return result


def _series(metrics: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
    return [s for s, _ in points], [v for _, v in points]


def wants_log_scale(metrics: list[dict[str, Any]]) -> bool:
    """Whether the loss spans more than a decade (then a linear axis flattens everything after the start)."""
    losses = [v for v in _series(metrics, "loss")[1] if v > 0]
    return bool(losses) and max(losses) / min(losses) > LOG_SCALE_SPAN


def _hide_axes(figure: go.Figure, row: int | None = None, col: int | None = None) -> None:
    figure.update_xaxes(visible=False, row=row, col=col)
    figure.update_yaxes(visible=False, row=row, col=col)


def _note(figure: go.Figure, text: str, x: float, y: float) -> None:
    figure.add_annotation(text=text, showarrow=False, x=x, y=y, xref="paper", yref="paper", font={"color": "#64748b"})


def loss_figure(metrics: list[dict[str, Any]], t, log_scale: bool | None = None) -> go.Figure:
    """Four panels: train loss (raw, smoothed) and eval loss; eval perplexity; learning rate; tokens/s and
    memory. Markers make even a single logged step visible. `log_scale` None: decided by the data."""
    from plotly.subplots import make_subplots

    preference = any(m.get(key) is not None for m in metrics for key in PREFERENCE_SERIES)
    titles = [t("chart_loss"), t("perplexity"), t.label("learning_rate"), t("throughput")]
    specs = [[{}, {}], [{}, {"secondary_y": True}]]
    if preference:  # a dpo/orpo/kto run: what it learns from the pairs, beside the loss
        titles += [t("chart_reward_margin"), t("chart_logps")]
        specs.append([{"secondary_y": True}, {}])
    figure = make_subplots(
        rows=len(specs),
        cols=2,
        horizontal_spacing=0.08,
        vertical_spacing=0.1 if preference else 0.16,
        subplot_titles=titles,
        specs=specs,
    )
    steps, losses = _series(metrics, "loss")
    if not losses:
        _hide_axes(figure)
        _note(figure, t("waiting_first_step"), 0.5, 0.5)
        figure.update_layout(
            height=520, margin={"l": 50, "r": 30, "t": 40, "b": 40}, template="plotly_white", modebar_remove=NO_TOOLBAR
        )
        return figure
    figure.add_trace(
        go.Scatter(
            x=steps,
            y=losses,
            mode="lines+markers",
            name=t("loss"),
            marker={"size": 3},
            line={"width": 1, "color": "rgba(59,130,246,0.35)"},
        ),
        row=1,
        col=1,
    )
    figure.add_trace(
        go.Scatter(x=steps, y=smooth(losses), mode="lines", name=t("loss_smoothed"), line={"color": "#2563eb"}),
        row=1,
        col=1,
    )
    eval_steps, eval_losses = _series(metrics, "eval_loss")
    if eval_losses:
        figure.add_trace(
            go.Scatter(
                x=eval_steps,
                y=eval_losses,
                mode="lines+markers",
                name=t("eval_loss"),
                marker={"size": 7, "symbol": "diamond"},
                line={"color": "#ea580c"},
            ),
            row=1,
            col=1,
        )
        figure.add_trace(
            go.Scatter(
                x=eval_steps,
                y=[math.exp(min(v, 50)) for v in eval_losses],
                mode="lines+markers",
                name=t("perplexity"),
                line={"color": "#ea580c"},
            ),
            row=1,
            col=2,
        )
    else:
        _hide_axes(figure, row=1, col=2)
        _note(figure, t("perplexity_hint"), 0.78, 0.8)
    figure.add_trace(
        go.Scatter(
            x=_series(metrics, "learning_rate")[0],
            y=_series(metrics, "learning_rate")[1],
            mode="lines+markers",
            marker={"size": 3},
            name=t.label("learning_rate"),
        ),
        row=2,
        col=1,
    )
    figure.add_trace(
        go.Scatter(
            x=_series(metrics, "tokens_per_second")[0],
            y=_series(metrics, "tokens_per_second")[1],
            mode="lines",
            name=t("tokens_per_second"),
        ),
        row=2,
        col=2,
    )
    figure.add_trace(
        go.Scatter(
            x=_series(metrics, "memory_mb")[0],
            y=_series(metrics, "memory_mb")[1],
            mode="lines",
            name=t("memory_mb"),
            line={"dash": "dot"},
        ),
        row=2,
        col=2,
        secondary_y=True,
    )
    if preference:
        _add_preference(figure, metrics, t)
    if wants_log_scale(metrics) if log_scale is None else log_scale:
        figure.update_yaxes(type="log", row=1, col=1)
    figure.update_layout(
        height=760 if preference else 520,
        margin={"l": 50, "r": 30, "t": 40, "b": 40},
        template="plotly_white",
        modebar_remove=NO_TOOLBAR,
        legend={"orientation": "h", "y": -0.12},
    )
    figure.update_xaxes(title_text=t("step"), row=len(specs))
    return figure


# The preference figures callbacks.py records (PREFERENCE_KEYS' names), by panel.
PREFERENCE_SERIES = ("reward_margin", "reward_accuracy", "logp_chosen", "logp_rejected", "kl")


def _add_preference(figure, metrics: list[dict[str, Any]], t) -> None:
    """Row 3: the reward margin (and KTO's KL) with the pair accuracy on its own axis; log p of chosen and rejected."""
    for key, secondary, style in (
        ("reward_margin", False, {"color": "#16a34a"}),
        ("kl", False, {"color": "#64748b", "dash": "dot"}),
        ("reward_accuracy", True, {"color": "#9333ea", "dash": "dash"}),
    ):
        steps, values = _series(metrics, key)
        if values:
            figure.add_trace(
                go.Scatter(x=steps, y=values, mode="lines+markers", marker={"size": 3}, name=t(key), line=style),
                row=3,
                col=1,
                secondary_y=secondary,
            )
    for key, color in (("logp_chosen", "#16a34a"), ("logp_rejected", "#dc2626")):
        steps, values = _series(metrics, key)
        if values:
            figure.add_trace(
                go.Scatter(
                    x=steps, y=values, mode="lines+markers", marker={"size": 3}, name=t(key), line={"color": color}
                ),
                row=3,
                col=2,
            )


def length_histogram(lengths: list[int], cutoff_len: int, t, total: int | None = None) -> go.Figure:
    """Token lengths of the samples, with cutoff_len marked and the number it would truncate in the title. With
    `total` larger than the number of lengths, they are a random sample of that many, and the title says so."""
    truncated = sum(length > cutoff_len for length in lengths)
    figure = go.Figure(go.Histogram(x=lengths, nbinsx=min(50, max(5, len(set(lengths)))), name=t("tokens")))
    longest = max(lengths) if lengths else 0
    if cutoff_len <= longest * 1.5:  # far to the right it would squash the bars into a sliver
        figure.add_vline(
            x=cutoff_len,
            line_dash="dash",
            line_color="#dc2626",
            annotation_text=f"cutoff_len={cutoff_len}",
            annotation_position="top right",
        )
    if total is not None and total > len(lengths):
        share = f"{100 * truncated / max(len(lengths), 1):.1f}%"
        title = t(
            "length_title_sampled",
            count=len(lengths),
            total=total,
            longest=longest,
            truncated=truncated,
            share=share,
            cutoff=cutoff_len,
        )
    else:
        title = t("length_title", count=len(lengths), longest=longest, truncated=truncated, cutoff=cutoff_len)
    figure.update_layout(
        title=title,
        xaxis_title=t("tokens"),
        yaxis_title=t("samples"),
        height=300,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
        template="plotly_white",
        modebar_remove=NO_TOOLBAR,
        bargap=0.05,
    )
    figure.update_yaxes(tickformat="d", rangemode="tozero")  # counts of samples are whole numbers
    if len(lengths) < 10:
        figure.update_yaxes(dtick=1)
    return figure


def overlay_figure(metrics_by_run: dict[str, list[dict[str, Any]]], t) -> go.Figure:
    """Training (and eval) loss of several runs on one chart."""
    figure = go.Figure()
    for name, metrics in metrics_by_run.items():
        train = [(m["step"], m["loss"]) for m in metrics if m.get("loss") is not None]
        evals = [(m["step"], m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None]
        figure.add_trace(go.Scatter(x=[s for s, _ in train], y=[v for _, v in train], mode="lines", name=name))
        if evals:
            figure.add_trace(
                go.Scatter(
                    x=[s for s, _ in evals],
                    y=[v for _, v in evals],
                    mode="markers",
                    name=f"{name} ({t('eval_loss')})",
                )
            )
    figure.update_layout(
        title=t("runs_compare"),
        xaxis_title=t("step"),
        yaxis_title=t("loss"),
        height=380,
        template="plotly_white",
        modebar_remove=NO_TOOLBAR,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    if not any(len(trace.x or ()) for trace in figure.data):
        _hide_axes(figure)
        _note(figure, t("no_data_yet"), 0.5, 0.5)
    elif any(wants_log_scale(metrics) for metrics in metrics_by_run.values()):
        figure.update_yaxes(type="log")
    return figure

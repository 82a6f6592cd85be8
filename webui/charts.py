"""Plotly figures from a run's metrics.jsonl records.

A panel without data shows a sentence, never empty axes (plotly's default -1..6 range reads as a broken chart);
the loss axis turns logarithmic when the loss spans more than a decade, where a linear axis shows a flat line.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

from core.stages import STAGES

SMOOTHING = 0.6  # TensorBoard's default weight
LOG_SCALE_SPAN = 10.0
MAX_POINTS = 2000  # per chart line  # max/min of the loss beyond which a log axis is the default
# Plotly's toolbar speaks English only and the charts need none of it: hovering shows the values.
NO_TOOLBAR = ["zoom", "pan", "select", "lasso", "zoomin", "zoomout", "autoscale", "resetscale", "toimage"]


def smooth(steps: list[int], values: list[float], weight: float = SMOOTHING, log: bool = False) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average debiased at the start (the first point is its own
    value, not pulled toward zero), time-weighted: a gap of k logging intervals decays the average as k points
    would, so a sparse log is not smoothed more than a dense one. With `log` it averages the logarithms: on a log
    axis a loss falling from 0.69 to 1e-36 is drawn falling, not held up near the first values. Points that
    cannot be averaged (nan, inf, or <= 0 on a log axis) repeat the line's last value, as TensorBoard does."""
    gaps = [b - a for a, b in zip(steps, steps[1:]) if b > a]
    unit = min(set(gaps), key=lambda gap: (-gaps.count(gap), gap)) if gaps else 1  # the usual logging interval
    result: list[float] = []
    total = norm = 0.0
    previous = steps[0] if steps else 0
    for step, value in zip(steps, values):
        usable = math.isfinite(value) and (value > 0 or not log)
        if usable:
            decay = weight ** (max(step - previous, 0) / unit)
            total = decay * total + (math.log(value) if log else value)
            norm = decay * norm + 1
            previous = step
        if norm:
            average = total / norm
            result.append(math.exp(average) if log else average)
        else:
            result.append(value)
    return result


def _series(metrics: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """One metric's (steps, values), at most MAX_POINTS of them (evenly spread, the last always kept): a long
    run's chart, redrawn as it trains, must not grow the page without bound."""
    points = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
    if len(points) > MAX_POINTS:
        stride = math.ceil(len(points) / MAX_POINTS)
        points = points[::-1][::stride][::-1]
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


def log_axis(figure: go.Figure, values: list[float], **where) -> None:
    """A log axis with powers of ten written out (10⁻⁹), never SI prefixes (plotly's "1n" reads as a typo), and
    few labels: 1, 2, 5 of each decade over a short span, whole decades (every k-th) over a long one, where
    plotly would label every digit and stack them."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    span = math.log10(max(positive) / min(positive)) if positive else 1.0
    dtick: str | int = "D2" if span <= 3 else max(1, math.ceil(span / 6))
    figure.update_yaxes(type="log", exponentformat="power", dtick=dtick, **where)


def loss_figure(metrics: list[dict[str, Any]], t, log_scale: bool | None = None, smoothing: bool = True) -> go.Figure:
    """Four panels: train loss (raw, and smoothed when `smoothing`) and eval loss; eval perplexity; learning rate;
    tokens/s and memory. Markers make even a single logged step visible. `log_scale` None: decided by the data."""
    use_log = wants_log_scale(metrics) if log_scale is None else log_scale
    from plotly.subplots import make_subplots

    preference = any(m.get(key) is not None for m in metrics for key in PREFERENCE_SERIES)
    titles = [t("chart_loss"), t("perplexity"), t.label("learning_rate"), t("throughput")]
    specs = [[{}, {}], [{}, {"secondary_y": True}]]
    if preference:  # a preference stage's run: what it learns from the pairs, beside the loss
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
    eval_losses = _add_losses(figure, metrics, t, smoothing, use_log)
    _add_progress(figure, metrics, t)
    if preference:
        _add_preference(figure, metrics, t)
    if use_log:
        log_axis(figure, losses + eval_losses, row=1, col=1)
    figure.update_layout(
        height=760 if preference else 520,
        margin={"l": 50, "r": 30, "t": 40, "b": 40},
        template="plotly_white",
        modebar_remove=NO_TOOLBAR,
        legend={"orientation": "h", "y": -0.12},
    )
    figure.update_xaxes(title_text=t("step"), row=len(specs))
    return figure


def _add_losses(figure: go.Figure, metrics: list[dict[str, Any]], t, smoothing: bool, use_log: bool) -> list[float]:
    """The first row: train loss (raw, and smoothed) with eval loss, and eval perplexity. Returns the eval losses
    (the log axis spans them too)."""
    steps, losses = _series(metrics, "loss")
    figure.add_trace(
        go.Scatter(
            x=steps,
            y=losses,
            mode="lines+markers",
            name=t("loss"),
            marker={"size": 3},
            # Beside the smoothed line the raw values are a pale background; alone they are the line.
            line={"width": 1, "color": "rgba(59,130,246,0.35)" if smoothing else "#2563eb"},
        ),
        row=1,
        col=1,
    )
    if smoothing:
        figure.add_trace(
            go.Scatter(
                x=steps,
                y=smooth(steps, losses, log=use_log),
                mode="lines",
                name=t("loss_smoothed"),
                line={"color": "#2563eb"},
            ),
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
    return eval_losses


def _add_progress(figure: go.Figure, metrics: list[dict[str, Any]], t) -> None:
    """The second row: learning rate; tokens/s with memory on its own axis."""
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


# The preference figures the stages' charts draw (core/stages/: each stage's `chart`, names in metrics.jsonl).
PREFERENCE_SERIES = tuple(dict.fromkeys(key for stage in STAGES.values() for key in stage.chart))


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
    longest = max(lengths) if lengths else 0
    # A few outliers (one 1M-token row among short ones) would make every bin as wide as a thousand samples: the
    # bins span the bulk of the lengths (and the cutoff), and the longer ones are counted in the last bar.
    ordered = sorted(lengths)
    bulk = ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0
    upper = max(bulk, min(cutoff_len, longest))
    outliers = [length for length in lengths if length > upper * 2]
    if outliers:
        size = max(upper * 1.1 / 50, 1)
        shown = [min(length, upper * 1.1) for length in lengths]
        histogram = go.Histogram(x=shown, xbins={"start": 0, "end": upper * 1.1 + size, "size": size})
    else:
        histogram = go.Histogram(x=lengths, nbinsx=min(50, max(5, len(set(lengths)))))
    figure = go.Figure(histogram.update(name=t("tokens")))
    if outliers:
        _note(figure, t("length_outliers", count=len(outliers), limit=int(upper * 1.1), longest=longest), 0.98, 0.75)
        figure.layout.annotations[-1].xanchor = "right"
    if cutoff_len <= (upper * 1.1 if outliers else longest * 1.5):  # far to the right it would squash the bars
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
        steps, losses = _series(metrics, "loss")  # thinned as the training chart is: long runs, several of them
        eval_steps, eval_losses = _series(metrics, "eval_loss")
        figure.add_trace(go.Scatter(x=steps, y=losses, mode="lines", name=name))
        if eval_steps:
            figure.add_trace(
                go.Scatter(
                    x=eval_steps,
                    y=eval_losses,
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
        log_axis(figure, [v for trace in figure.data for v in trace.y or ()])
    return figure

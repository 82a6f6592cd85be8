"""What keeps the page truthful without reloads (issue 24), as core and chart logic: the lists' fingerprint moves
when a dataset or run changes and only then, the stage follows pairwise data, smoothing follows the raw loss,
log ticks read as powers of ten, an outlier does not widen the histogram's bins, English counts agree."""

from __future__ import annotations

import json
import math

from core.i18n import Message
from core.methods import METHODS
from core.models.demo import DEMOS
from core.stages import STAGES
from core.suggest import learning_rate_for, suggest_stage
from core.workbench import Workbench
from webui.charts import length_histogram, loss_figure, smooth
from webui.locale import Translator


def test_the_lists_version_moves_with_datasets_and_run_states_only(tmp_path):
    wb = Workbench(tmp_path / "ws")
    first = wb.lists_version()
    assert wb.lists_version() == first  # nothing changed: nothing to refresh
    source = tmp_path / "mine.json"
    source.write_text(json.dumps([{"instruction": "hi", "output": "hello"}]), encoding="utf-8")
    wb.add_upload(source)
    uploaded = wb.lists_version()
    assert uploaded["datasets"] != first["datasets"] and uploaded["runs"] == first["runs"]
    counts = wb.record_column_judgment([{"role": "user", "content": "who?"}], ["me", "you"], ["", "run-a"], 0, "better")
    assert counts["pairs"] == 1
    voted = wb.lists_version()
    assert voted["datasets"] != uploaded["datasets"]
    # The Data tab's list names the feedback file with the count the vote notice gives.
    assert ("feedback/chat.jsonl", counts and wb.feedback_datasets()[0]["path"]) in wb.dataset_choices()
    run = tmp_path / "ws" / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "running", "step": 1}), encoding="utf-8")
    started = wb.lists_version()
    assert started["runs"] != voted["runs"] and started["datasets"] == voted["datasets"]
    (run / "status.json").write_text(json.dumps({"state": "running", "step": 2}), encoding="utf-8")
    assert wb.lists_version()["runs"] == started["runs"]  # progress alone redraws no list


def test_pairwise_data_suggests_dpo_with_its_own_learning_rate(tmp_path, demo_model_dir):
    assert suggest_stage("alpaca_pairwise", "demo") == ("dpo", STAGES["dpo"].learning_rates[0])
    assert suggest_stage("openai_pairwise", "THUDM/glm-4-9b-chat-hf") == ("dpo", 5e-6)
    assert suggest_stage("alpaca", "demo", "lora")[0] == "sft"
    # Every demo model is the tiny random one that needs the large steps, by name or by its built folder.
    for demo in DEMOS:
        assert learning_rate_for("sft", demo, "full") == METHODS["full"].learning_rates[0]
    assert learning_rate_for("sft", str(demo_model_dir), "full") == METHODS["full"].learning_rates[0]
    assert learning_rate_for("sft", "THUDM/glm-4-9b-chat-hf", "full") == METHODS["full"].learning_rates[1]
    wb = Workbench(tmp_path / "ws")
    assert wb.suggest_stage("identity_pairs")[0] == "dpo" and wb.suggest_stage("identity")[0] == "sft"
    assert wb.suggest_stage(str(tmp_path / "missing.json")) is None


def test_smoothing_is_debiased_time_weighted_and_follows_a_fast_drop():
    steps, values = [1, 2, 3, 4], [2.0, 1.0, 1.0, 1.0]
    smoothed = smooth(steps, values, weight=0.6)
    assert smoothed[0] == 2.0  # debiased: the first point is its own value, not 0.4 of it
    # Evenly logged, it is TensorBoard's debiased EMA.
    average, expected = 0.0, []
    for index, value in enumerate(values, start=1):
        average = 0.6 * average + 0.4 * value
        expected.append(average / (1 - 0.6**index))
    assert all(math.isclose(a, b) for a, b in zip(smoothed, expected))
    # A gap of 10 intervals forgets as much as 10 points would.
    sparse = smooth([1, 2, 12], [5.0, 5.0, 1.0], weight=0.6)
    assert sparse[-1] < 1.05
    # A DPO loss falling from 0.69 to 1e-36, on a log axis: the smoothed line falls with it, not held near 0.5.
    dpo = [0.69, 0.5] + [1e-36] * 8
    on_log = smooth(list(range(1, 11)), dpo, log=True)
    assert on_log[-1] < 1e-30
    figure = loss_figure([{"step": s, "loss": v} for s, v in enumerate(dpo, 1)], Translator("en"))
    assert figure.layout.yaxis.type == "log" and figure.layout.yaxis.exponentformat == "power"  # 10⁻⁹, not "1n"
    assert figure.layout.yaxis.dtick == 6  # 36 decades: a label every 6th, not every digit
    assert [trace.name for trace in figure.data[:2]] == ["loss", "loss (smoothed)"]
    raw_only = loss_figure([{"step": s, "loss": v} for s, v in enumerate(dpo, 1)], Translator("en"), smoothing=False)
    assert "loss (smoothed)" not in [trace.name for trace in raw_only.data]


def test_a_long_run_draws_a_bounded_number_of_points():
    metrics = [{"step": s, "loss": 1 / s} for s in range(1, 20_001)]
    figure = loss_figure(metrics, Translator("en"))
    assert len(figure.data[0].x) <= 2_000 and figure.data[0].x[-1] == 20_000


def test_nothing_a_long_session_shows_grows_without_bound(tmp_path):
    """The runs comparison of long runs, a prediction or an arena question of a long row and a long
    log line reach the page cut to a bounded size, saying how much was left out."""
    from core.evaluation.arena import ArenaItemView, ArenaView
    from core.runs import read_log_tail
    from webui.charts import overlay_figure
    from webui.context import UIContext
    from webui.tabs.evaluate_handlers import prediction_table, show

    t = Translator("en")
    long_run = [{"step": s, "loss": 1 / s, "eval_loss": 2 / s} for s in range(1, 20_001)]
    figure = overlay_figure({"a": long_run, "b": long_run}, t)
    assert all(len(trace.x) <= 2_000 and trace.x[-1] == 20_000 for trace in figure.data)
    huge = "长" * 100_000
    table = prediction_table([{"prompt": huge, "label": "x", "prediction": "y"}], t)
    assert len(table.iloc[0, 0]) < 2_100 and "98,000 more" in table.iloc[0, 0]
    item = ArenaItemView(0, [{"role": "user", "content": huge}], "", huge, "a", "b", None, None)
    page = show(UIContext(Workbench(tmp_path), t), ArenaView("arena-1", "run", "data", 1, 0, False, [item]), 0)
    assert 40_000 < len(page[1]) < 41_000 and page[1].count("80,000 more characters") == 2
    (tmp_path / "log.txt").write_text("short\n" + "x" * 100_000 + "\nlast\n", encoding="utf-8")
    assert read_log_tail(tmp_path).splitlines() == ["short", "x" * 2_000 + " …", "last"]


def test_one_huge_row_does_not_widen_the_histogram_bins():
    lengths = [40 + n for n in range(200)] + [1_000_000]
    figure = length_histogram(lengths, 1024, Translator("en"))
    assert figure.data[0].xbins.size < 100 and max(figure.data[0].x) < 2_000
    assert any("longest 1000000" in note.text for note in figure.layout.annotations)
    plain = length_histogram([10, 20, 30], 1024, Translator("en"))
    assert plain.data[0].xbins.size is None  # no outlier: plotly's own bins


def test_english_counts_agree_and_chinese_reads_the_same():
    en, zh = Translator("en"), Translator("zh")
    assert en("data_problems", count=1) == "1 row skipped:" and en("data_problems", count=2) == "2 rows skipped:"
    summary = en("data_summary", path="a", format="alpaca", rows=1, usable=1)
    assert "1 row ·" in summary and "1 usable conversation" in summary and "conversations" not in summary
    assert "|" not in zh("data_problems", count=1)
    assert "1 of 1 row skipped" in Message(
        "data.rows_skipped", {"skipped": 1, "total": 1, "first": "x", "file": "f"}
    ).render("en")


def test_the_data_tab_knows_when_no_answer_survives_the_cutoff(tmp_path, demo_model_dir):
    rows = [{"instruction": "问题" * 200, "output": "回答"} for _ in range(3)]
    path = tmp_path / "all_too_long.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    wb = Workbench(tmp_path / "ws", allowed_dirs=[tmp_path])
    found = wb.token_lengths(str(path), "auto", str(demo_model_dir), "auto")
    assert found.keeping_answer(64) == 0 and found.keeping_answer(100_000) == 3
    line = Translator("en")("data_cutoff_none", kept=0, total=3, cutoff=64)
    assert line.startswith("**0 of 3 conversations keep an answer token within cutoff 64**")


def test_the_exported_zip_carries_a_model_card_and_a_merged_model_zips(tmp_path, demo_model_dir):
    import zipfile

    from core.config import RunConfig

    wb = Workbench(tmp_path / "ws")
    run = wb.start_training(RunConfig(dataset="identity", max_steps=4, learning_rate=4e-3))
    wb.wait_for_job(900)
    assert wb.snapshot(run).state == "finished"
    with zipfile.ZipFile(wb.export_zip(run)) as archive:
        card = archive.read("README.md").decode()
        adapter_config = json.loads(archive.read("adapter_config.json"))
    assert "[More Information Needed]" not in card
    for fact in ("**demo**", "| method | lora |", "| stage | sft |", "| training data | identity |", "4/4"):
        assert fact in card, fact
    assert 'PeftModel.from_pretrained(base, "path/to/this/unzipped/folder")' in card
    assert adapter_config["base_model_name_or_path"] == "demo"  # not the server's path to the demo model
    merged = wb.merge_run(run, str(tmp_path / "ws" / "exports" / "merged"))
    with zipfile.ZipFile(wb.merged_zip(merged)) as archive:
        names = archive.namelist()
    assert "config.json" in names and any(name.endswith(".safetensors") for name in names)

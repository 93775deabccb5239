"""The Anatomy view, the step anatomy in the Scaling view, and the one-line anatomy in the
terminal, from hand-made anatomy and memory_breakdown records whose numbers are chosen so that
every share and every MiB is exact."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from test_report_synthetic import make_doc, write_doc

from bench import console
from bench.records import dump
from bench.report import build_views, render
from bench.report.anatomy import mib
from bench.report.model import Bullets, FigureBlock, Section, Switcher, Table, View
from bench.results import Run, load_run, validate_doc
from bench.scaling import analyze

MIB = 1024 * 1024


def phases(data: float, forward: float, loss: float, backward: float, optimizer: float, other: float,
           communication: float | None = None, exposed: float | None = None) -> dict[str, Any]:
    return {"data_ms": data, "forward_ms": forward, "loss_ms": loss, "backward_ms": backward,
            "optimizer_ms": optimizer, "other_ms": other,
            "step_ms": data + forward + loss + backward + optimizer + other,
            "communication_ms": communication, "exposed_communication_ms": exposed}


def memory(params_mib: float, grads_mib: float, opt_mib: float, act_mib: float, other_mib: float) -> dict[str, Any]:
    parts = [params_mib, grads_mib, opt_mib, act_mib, other_mib]
    return {"parameters_bytes": int(params_mib * MIB), "gradients_bytes": int(grads_mib * MIB),
            "optimizer_state_bytes": int(opt_mib * MIB), "activations_bytes": int(act_mib * MIB),
            "other_bytes": int(other_mib * MIB), "peak_bytes": int(sum(parts) * MIB), "peak_source": "tensor hooks"}


# One process: a 20 ms step, half of it backward.
SINGLE = phases(1.0, 6.0, 0.4, 10.0, 2.0, 0.6)
# Two DDP ranks: rank 1 is the slowest (24 ms), 4 of its 14 ms of backward waiting for 9 ms of communication.
RANK_0 = phases(1.0, 5.0, 0.4, 13.0, 2.0, 0.6, communication=9.0, exposed=3.0)
RANK_1 = phases(1.0, 6.0, 0.4, 14.0, 2.0, 0.6, communication=9.0, exposed=4.0)


def with_anatomy(doc: dict[str, Any]) -> dict[str, Any]:
    """The first case on one process, the second a two-rank DDP case; the third has neither record."""
    single, ddp = doc["cases"][0], doc["cases"][1]
    single["collectors"]["anatomy"] = {"error": None, "phases": SINGLE, "steps": 20, "timing": "timestamps",
                                       "measured_step_ms": 19.0, "cost_s": 0.8, "notes": []}
    single["collectors"]["memory_breakdown"] = {"error": None, "categories": memory(12.5, 12.5, 25, 40, 2.5)}
    ddp["params"].update(mode="ddp", world_size=2)
    ddp["collectors"]["anatomy"] = {
        "error": None, "phases": RANK_1, "steps": 20, "timing": "timestamps", "measured_step_ms": 25.0,
        "cost_s": 1.5, "ranks": [{**RANK_0, "rank": 0}, {**RANK_1, "rank": 1}], "slowest_rank": 1,
        "notes": ["communication from a profiled window"]}
    ddp["collectors"]["memory_breakdown"] = {
        "error": None, "categories": memory(10, 10, 20, 30, 2),
        "ranks": [{**memory(10, 10, 20, 30, 2), "rank": 0}, {**memory(10, 10, 20, 36, 2), "rank": 1}]}
    return doc


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    doc = with_anatomy(make_doc(4, gpu=False, problems=False, profile=False, scaling=False))
    return load_run(write_doc(tmp_path_factory.mktemp("anatomy") / "anatomy-run", doc))


def view_of(runs: list[Run], key: str) -> View:
    (view,) = [v for v in build_views(runs) if v.key == key]
    return view


def figures(view: View) -> list[dict[str, Any]]:
    out = []
    for b in view.blocks:
        for inner in (b.blocks if isinstance(b, Section) else [b]):
            if isinstance(inner, FigureBlock | Switcher):
                out.append(json.loads(inner.spec))
    return out


def traces_by_name(fig: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in fig["data"]}


def test_the_anatomy_view_comes_after_step_time_and_before_memory(run: Run) -> None:
    keys = [v.key for v in build_views([run])]
    assert keys[keys.index("step-time") + 1] == "anatomy"
    assert keys.index("anatomy") < keys.index("memory")


def test_the_step_chart_stacks_each_phase_in_ms_with_backward_split_where_communication_was_exposed(
        run: Run) -> None:
    step = figures(view_of([run], "anatomy"))[0]
    assert step["layout"]["barmode"] == "stack"
    ids = [c.id for c in run.cases[:2]]
    bars = traces_by_name(step)
    assert list(bars) == ["data", "forward", "loss", "backward compute", "exposed communication", "optimizer",
                          "other"]
    assert all(t["y"] == ids for t in bars.values())
    assert bars["data"]["x"] == [1, 1]
    assert bars["forward"]["x"] == [6, 6]
    assert bars["loss"]["x"] == [0.4, 0.4]
    # One process: backward is whole; two ranks: 14 ms of backward, 4 of them waiting for communication.
    assert bars["backward compute"]["x"] == [10, 10]
    assert bars["exposed communication"]["x"] == [None, 4]
    assert bars["optimizer"]["x"] == [2, 2]
    assert bars["other"]["x"] == [0.6, 0.6]


def test_hovering_a_phase_gives_its_ms_and_share_of_the_step_and_the_total_communication(run: Run) -> None:
    bars = traces_by_name(figures(view_of([run], "anatomy"))[0])
    backward = bars["backward compute"]
    # [share of the step in %, the part's name for this case, communication ms, step ms]
    assert backward["customdata"] == [[50, "backward", None, 20], [41.7, "backward compute", 9, 24]]
    assert "ms (%{customdata[0]:.1f}% of the %{customdata[3]:,.3g} ms step)" in backward["hovertemplate"]
    exposed = bars["exposed communication"]
    assert exposed["customdata"][1] == [16.7, "exposed communication", 9, 24]
    assert "communication in flight: %{customdata[2]:,.3g} ms per step" in exposed["hovertemplate"]


def test_the_memory_chart_stacks_each_category_in_mib_with_the_peak_marked(run: Run) -> None:
    mem = traces_by_name(figures(view_of([run], "anatomy"))[1])
    assert list(mem) == ["parameters", "gradients", "optimizer state", "activations", "other", "peak"]
    assert mem["parameters"]["x"] == [12.5, 10]
    assert mem["gradients"]["x"] == [12.5, 10]
    assert mem["optimizer state"]["x"] == [25, 20]
    assert mem["activations"]["x"] == [40, 30]
    assert mem["other"]["x"] == [2.5, 2]
    assert mem["peak"]["x"] == [92.5, 72]
    assert mem["activations"]["customdata"][0] == [43.2]  # 40 of 92.5 MiB, in %


def test_a_distributed_case_gets_a_bar_per_rank_with_the_slowest_rank_marked(run: Run) -> None:
    (switcher,) = [b for b in view_of([run], "anatomy").blocks if isinstance(b, Switcher)]
    assert switcher.options == [run.cases[1].id]
    (fig,) = json.loads(switcher.spec)["figures"]
    step = {t["name"]: t for t in fig["data"] if t["xaxis"] == "x"}
    assert step["backward compute"]["y"] == ["rank 0", "rank 1 (slowest)"]
    assert step["backward compute"]["x"] == [10, 10]
    assert step["exposed communication"]["x"] == [3, 4]
    assert step["forward"]["x"] == [5, 6]
    mem = {t["name"]: t for t in fig["data"] if t["xaxis"] == "x2"}
    assert mem["activations"]["y"] == ["rank 0", "rank 1 (slowest)"]
    assert mem["activations"]["x"] == [30, 36]
    assert fig["layout"]["title"]["text"].endswith("(slowest rank's step 9.1% longer than the fastest's)")


def test_the_view_says_in_words_what_dominates_each_step_and_memory(run: Run) -> None:
    (words,) = [b for b in view_of([run], "anatomy").blocks if isinstance(b, Bullets)]
    single, ddp = run.cases[0].id, run.cases[1].id
    assert words.items == [
        f"{single} (20 ms per step): backward is 50% of the step, forward 30%; activations are the largest "
        "part of memory (40 of 92.5 MiB at the peak).",
        f"{ddp} (24 ms per step): backward is 58% of the step, forward 25%; exposed communication 17%; rank 1 "
        "is the slowest, its step 9% longer than the fastest rank's; activations are the largest part of "
        "memory (30 of 72 MiB at the peak).",
    ]


def test_ranks_within_half_a_percent_are_said_to_keep_pace_rather_than_one_named_slowest(
        tmp_path: Path) -> None:
    doc = with_anatomy(make_doc(4, gpu=False, problems=False, profile=False, scaling=False))
    anatomy = doc["cases"][1]["collectors"]["anatomy"]
    anatomy["ranks"] = [{**RANK_1, "rank": 0}, {**RANK_1, "rank": 1}]
    even = load_run(write_doc(tmp_path / "even", doc))
    (words,) = [b for b in view_of([even], "anatomy").blocks if isinstance(b, Bullets)]
    assert "the ranks' steps are within 0.5% of each other" in words.items[1]
    assert "is the slowest" not in words.items[1]


def test_the_table_sets_the_anatomy_step_against_the_measured_step_with_the_anatomys_cost(run: Run) -> None:
    (table,) = [b for b in view_of([run], "anatomy").blocks if isinstance(b, Table)]
    header = [c.title for c in table.columns]
    rows = [dict(zip(header, [c.text for c in row], strict=True)) for row in table.rows]
    assert [r["anatomy step (ms)"] for r in rows] == ["20.00", "24.00"]
    assert [r["measured step (ms)"] for r in rows] == ["19.00", "25.00"]
    assert [r["anatomy / measured (x)"] for r in rows] == ["1.05", "0.96"]
    assert [r["anatomy cost (s)"] for r in rows] == ["0.80", "1.50"]
    assert [r["largest phase"] for r in rows] == ["backward 50%", "backward 58%"]
    assert [r["exposed communication (ms)"] for r in rows] == ["", "4.00"]
    assert [r["slowest rank"] for r in rows] == ["", "1"]
    assert [r["rank skew (%)"] for r in rows] == ["", "9.1"]
    assert rows[1]["notes"] == "communication from a profiled window"


def test_the_anatomy_view_is_absent_for_results_without_anatomy_or_memory_breakdown(tmp_path: Path) -> None:
    older = load_run(write_doc(tmp_path / "older", make_doc(4)))
    assert "anatomy" not in [v.key for v in build_views([older])]


def test_a_collector_that_recorded_an_error_leaves_no_anatomy_view(tmp_path: Path) -> None:
    doc = make_doc(3, gpu=False, problems=False, scaling=False)
    doc["cases"][0]["collectors"]["anatomy"] = {"error": "anatomy: the model has no backward"}
    run = load_run(write_doc(tmp_path / "failed", doc))
    assert [v.key for v in build_views([run]) if v.key == "anatomy"] == []


def test_the_anatomy_view_renders_in_the_page(run: Run) -> None:
    html = render([run], inline_plotlyjs=False)
    assert '<section class="view" id="view-anatomy"' in html
    assert "backward is 58% of the step, forward 25%; exposed communication 17%" in html


# ---------------------------------------------------------------------------------------------
# Scaling


def scaling_doc() -> dict[str, Any]:
    """One DDP group at world sizes 1, 2 and 4, weak scaling: forward and the rest stay, exposed
    communication grows from nothing to 2 and 6 ms; at 4, rank 3's 26 ms step is 10% longer than the others' 23.6 ms."""
    doc = make_doc(1, gpu=False, problems=False, profile=False, scaling=False)
    template = doc["cases"][0]
    cases = []
    for n, exposed, throughput in ((1, None, 1000.0), (2, 2.0, 1800.0), (4, 6.0, 3100.0)):
        case = copy.deepcopy(template)
        case["id"] = f"mlp-ddp-ws{n}"
        case["params"].update(mode="ddp", world_size=n)
        case["metrics"]["throughput"].update(median=throughput, mean=throughput, ci95=[throughput, throughput])
        slowest = phases(1.0, 6.0, 0.4, 10.0 + (exposed or 0.0), 2.0, 0.6,
                         communication=None if exposed is None else 3 * exposed, exposed=exposed)
        anatomy: dict[str, Any] = {"error": None, "phases": slowest, "measured_step_ms": slowest["step_ms"]}
        if n == 4:
            fastest = phases(1.0, 6.0, 0.4, 10.0 + 6.0 - 2.0, 2.0, 0.6 - 0.4, communication=18.0, exposed=4.0)
            anatomy.update(ranks=[{**fastest, "rank": 0}, {**fastest, "rank": 1}, {**fastest, "rank": 2},
                                  {**slowest, "rank": 3}], slowest_rank=3)
        case["collectors"] = {"anatomy": anatomy}
        cases.append(case)
    doc["cases"] = cases
    doc["scaling"] = [dump(e) for e in analyze(validate_doc(doc, "scaling").cases)]
    return doc


@pytest.fixture(scope="module")
def scaling_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return load_run(write_doc(tmp_path_factory.mktemp("scaling") / "scaling-run", scaling_doc()))


def test_the_scaling_view_stacks_the_step_anatomy_of_each_world_size(scaling_run: Run) -> None:
    throughput, anatomy = figures(view_of([scaling_run], "scaling"))
    # The throughput and efficiency chart stays first; the anatomy comes below it.
    assert throughput["layout"]["title"]["text"] == "Scaling with world size (dotted: ideal)"
    bars = traces_by_name(anatomy)
    assert anatomy["layout"]["barmode"] == "stack"
    assert all(t["x"] == ["1", "2", "4"] for t in bars.values())
    assert bars["backward compute"]["y"] == [10, 10, 10]
    assert bars["exposed communication"]["y"] == [None, 2, 6]
    assert bars["forward"]["y"] == [6, 6, 6]
    assert "DDP: step anatomy" in [a["text"] for a in anatomy["layout"]["annotations"]]


def test_the_scaling_view_says_which_part_of_the_step_grew_with_the_world_size_and_the_rank_skew(
        scaling_run: Run) -> None:
    (words,) = [b for b in view_of([scaling_run], "scaling").blocks if isinstance(b, Bullets)]
    assert words.items == [
        "DDP · mlp sgd relu bs16 (weak): the step is 20 ms at world size 1 and 26 ms at 4; exposed "
        "communication grew most (+6 ms, 23% of the step at 4); at 4, rank 3 is the slowest, 10% behind the "
        "fastest."]


def test_the_scaling_table_gives_each_world_sizes_anatomy_step_exposed_communication_and_skew(
        scaling_run: Run) -> None:
    (table,) = [b for b in view_of([scaling_run], "scaling").blocks if isinstance(b, Table)]
    header = [c.title for c in table.columns]
    rows = [dict(zip(header, [c.text for c in row], strict=True)) for row in table.rows]
    assert [r["world size"] for r in rows] == ["1", "2", "4"]
    assert [r["anatomy step (ms)"] for r in rows] == ["20.00", "22.00", "26.00"]
    assert [r["exposed communication (ms)"] for r in rows] == ["", "2.00", "6.00"]
    assert [r["rank skew (%)"] for r in rows] == ["", "", "10.2"]  # 26 ms over 23.6 ms


def test_the_scaling_view_puts_dataparallels_growth_in_forward_where_it_scatters_and_gathers(
        tmp_path: Path) -> None:
    doc = scaling_doc()
    doc["cases"] = doc["cases"][:2]
    for case, forward in zip(doc["cases"], (6.0, 9.0), strict=True):
        case["id"] = case["id"].replace("ddp", "dp")
        case["params"]["mode"] = "dp"
        case["collectors"]["anatomy"] = {"error": None, "phases": phases(1.0, forward, 0.4, 10.0, 2.0, 0.6)}
    doc["scaling"] = [dump(e) for e in analyze(validate_doc(doc, "dp").cases)]
    (words,) = [b for b in view_of([load_run(write_doc(tmp_path / "dp", doc))], "scaling").blocks
                if isinstance(b, Bullets)]
    assert words.items == [
        "DP · mlp sgd relu bs16 (weak): the step is 20 ms at world size 1 and 23 ms at 2; forward grew most "
        "(+3 ms, 39% of the step at 2): DataParallel scatters the batch, replicates the model and gathers the "
        "outputs in forward."]


def test_a_scaling_view_without_anatomy_keeps_its_chart_and_table_alone(tmp_path: Path) -> None:
    view = view_of([load_run(write_doc(tmp_path / "plain", make_doc(4)))], "scaling")
    assert [type(b).__name__ for b in view.blocks] == ["FigureBlock", "Table"]
    assert "anatomy step (ms)" not in [c.title for b in view.blocks if isinstance(b, Table) for c in b.columns]


# ---------------------------------------------------------------------------------------------
# Terminal


def test_bench_run_prints_one_anatomy_line_per_case_that_has_one(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    console.print_results(run.cases)
    lines = [line for line in capsys.readouterr().out.splitlines() if "anatomy:" in line]
    single, ddp = run.cases[0].id, run.cases[1].id
    assert lines == [
        f"{single}  anatomy: data 5% · fwd 30% · loss 2% · bwd 50% · opt 10% · other 3% · "
        "mem 12.5 MiB params, 12.5 MiB grads, 25 MiB opt, 40 MiB act, 2.5 MiB other",
        f"{ddp}  anatomy: data 4% · fwd 25% · loss 2% · bwd 58% (exposed comm 17%) · opt 8% · other 2% · "
        "mem 10 MiB params, 10 MiB grads, 20 MiB opt, 30 MiB act, 2 MiB other",
    ]


def test_a_case_with_only_a_memory_breakdown_gets_a_memory_only_line(run: Run) -> None:
    case = run.cases[0].model_copy(deep=True)
    case.collectors.anatomy = None
    assert console.anatomy_lines([case]) == [
        f"{case.id}  anatomy: mem 12.5 MiB params, 12.5 MiB grads, 25 MiB opt, 40 MiB act, 2.5 MiB other"]


def test_memory_in_words_keeps_three_digits_and_bounds_a_few_bytes() -> None:
    assert [mib(v) for v in (1234.5, 12.345, 0.5, 0.00187, 0.0)] == ["1,234", "12.3", "0.5", "<0.01", "0"]

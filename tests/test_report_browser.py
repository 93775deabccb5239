"""The report opened in a real headless Chromium (Debian's /usr/bin/chromium; never a downloaded
browser), used as a person would: views visible, charts drawn, the table sorted by clicking and
filtered by typing, hostile names shown as text, no request to any other host, no console error.
Screenshots of every view are saved under each test's tmp_path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_report_anatomy import memory, scaling_doc
from test_report_synthetic import EVIL, make_doc, write_doc

from bench.report import write_report
from bench.results import load_run, load_runs

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM),
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@dataclass
class Opened:
    page: Any
    errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def views(self) -> list[str]:
        keys: list[str] = self.page.eval_on_selector_all("section.view", "els => els.map(e => e.dataset.view)")
        return keys

    def screenshot_views(self, folder: Path) -> list[Path]:
        shots = []
        for key in self.views():
            path = folder / f"view-{key}.png"
            self.page.locator(f"#view-{key}").screenshot(path=str(path))
            shots.append(path)
        return shots


@pytest.fixture
def open_report(browser: Any) -> Iterator[Any]:
    pages: list[Any] = []

    def open_(path: Path) -> Opened:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        pages.append(page)
        opened = Opened(page)
        page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: opened.errors.append(str(e)))
        page.on("dialog", lambda d: (opened.dialogs.append(d.message), d.dismiss()))

        def route(r: Any) -> None:
            if r.request.url.startswith("file://"):
                r.continue_()
            else:  # anything else would fail offline: record it and refuse it
                opened.foreign_requests.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready]", timeout=60_000)
        return opened

    yield open_
    for page in pages:
        page.close()


def _plots_drawn(page: Any) -> int:
    count: int = page.locator(".js-plotly-plot .main-svg").first.evaluate(
        "_ => [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('svg.main-svg')).length")
    return count


def test_a_real_run_report_shows_its_views_and_draws_every_chart(smoke_run: Any, open_report: Any,
                                                                 tmp_path: Path) -> None:
    report = write_report([load_run(smoke_run.out)], tmp_path / "report.html")
    opened = open_report(report)
    page = opened.page
    assert opened.views() == ["summary", "effects", "throughput", "trials", "step-time", "anatomy", "memory", "flops"]
    for key in opened.views():
        assert page.locator(f"#view-{key} h2").is_visible()
    # One chart per view, but throughput: by model and by optimizer, and small multiples unless the
    # two models' trials came out so far apart in scale that each chart has a panel per model.
    plots = {key: page.locator(f"#view-{key} .plot").count() for key in opened.views()}
    assert plots.pop("throughput") in (2, 3) and plots.pop("summary") == 0
    assert plots.pop("anatomy") == 2  # the phases and the memory categories
    assert set(plots.values()) == {1}
    assert _plots_drawn(page) == page.locator(".plot").count()
    assert page.locator("#view-throughput .js-plotly-plot g.trace.bars").count() >= 2
    assert page.locator("#view-effects .js-plotly-plot g.trace.scatter .point").count() == 2  # model, optimizer
    assert page.locator("#view-trials .js-plotly-plot g.trace.scatter .point").count() >= 2
    assert opened.errors == [] and opened.foreign_requests == [] and opened.dialogs == []
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert len(opened.screenshot_views(tmp_path)) == 8


def test_the_results_table_sorts_by_clicking_and_filters_by_typing(smoke_run: Any, open_report: Any,
                                                                   tmp_path: Path) -> None:
    report = write_report([load_run(smoke_run.out)], tmp_path / "report.html")
    page = open_report(report).page
    table = page.locator("table#results")

    def column(title: str) -> list[str]:
        index = [t.strip() for t in table.locator("thead th button").all_inner_texts()].index(title)
        return [c.strip() for c in table.locator(f"tbody tr:visible td:nth-child({index + 1})").all_inner_texts()]

    def numbers(title: str) -> list[float]:
        return [float(v.replace(",", "")) for v in column(title)]

    table.get_by_role("button", name="throughput (samples/s)", exact=True).click()
    ascending = numbers("throughput (samples/s)")
    assert ascending == sorted(ascending) and len(ascending) == 4
    table.get_by_role("button", name="throughput (samples/s)", exact=True).click()
    assert numbers("throughput (samples/s)") == sorted(ascending, reverse=True)
    assert table.locator("th", has_text="throughput").get_attribute("aria-sort") == "descending"
    table.get_by_role("button", name="case", exact=True).click()
    assert column("case") == ["cnn-adam", "cnn-sgd", "mlp-adam", "mlp-sgd"]

    page.get_by_placeholder("Filter rows").fill("adam")
    assert column("case") == ["cnn-adam", "mlp-adam"]
    assert page.locator("[data-count-for=results]").inner_text() == "2 of 4 rows"
    page.get_by_placeholder("Filter rows").fill("mlp adam")
    assert column("case") == ["mlp-adam"]
    page.get_by_placeholder("Filter rows").fill("")
    assert len(column("case")) == 4


def test_hostile_names_show_as_text_and_run_nothing(open_report: Any, tmp_path: Path) -> None:
    report = write_report([load_run(write_doc(tmp_path / "evil", make_doc(6, evil=True)))], tmp_path / "evil.html")
    opened = open_report(report)
    page = opened.page
    page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert opened.dialogs == []
    assert page.locator("img").count() == 0
    assert EVIL in page.locator("h1").inner_text()
    assert page.locator("table#results td", has_text=EVIL).first.is_visible()
    assert page.locator("td", has_text=EVIL).count() >= 2  # the case id and the failed case's reason
    # Plotly draws labels as SVG text: the name is there, as text.
    assert page.locator("#view-throughput svg text", has_text=EVIL).count() >= 1
    assert opened.errors == [] and opened.foreign_requests == []


def test_a_gpu_report_over_two_runs_shows_every_view_switches_cases_and_colours_verdicts(
        open_report: Any, tmp_path: Path) -> None:
    base = write_doc(tmp_path / "base", make_doc(12))
    new = write_doc(tmp_path / "new", make_doc(12, speed=0.85, seed=1))
    runs = load_runs([base, new])
    ids = [c.id for c in runs[0].cases[:9]]
    rows = [SimpleNamespace(case_id=i, metric="throughput", base=100.0, new=100.0 * (1 + ch), change=ch,
                            ci95=(ch - 0.02, ch + 0.02), p_value=0.01, verdict=v, message=f"{v} by the rule -5%")
            for i, (ch, v) in zip(ids, [(-0.15, "regression"), (0.08, "improvement"), (0.01, "unchanged"),
                                        (-0.04, "inconclusive")] * 3, strict=False)]
    report = write_report(runs, tmp_path / "site" / "report.html",
                          comparisons=[SimpleNamespace(new_label="new", rows=rows)])
    opened = open_report(report)
    page = opened.page
    assert opened.views() == ["summary", "throughput", "step-time", "scaling", "memory", "gpu", "profile", "flops",
                              "comparison"]
    # Every chart outside a closed section is drawn; the profile's first case is open.
    visible = page.locator(".plot").evaluate_all("els => els.filter(e => !e.closest('details:not([open])')).length")
    assert _plots_drawn(page) == visible
    # The telemetry switcher redraws the chart for the chosen case, with the measured window marked.
    gpu = page.locator("#view-gpu")
    assert ids[0] in (gpu.locator(".gtitle").text_content() or "")
    gpu.locator("select").select_option(index=3)
    page.wait_for_function("id => document.querySelector('#view-gpu .gtitle').textContent.includes(id)",
                           arg=runs[0].cases[3].id)
    assert gpu.locator(".shapelayer path").count() >= 1  # the measured windows' band
    # Verdicts colour the comparison table.
    comparison = page.locator("#view-comparison")
    assert comparison.locator("td.verdict-regression").first.inner_text() == "-15.0% regression"
    colour = comparison.locator("td.verdict-regression").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(253, 226, 225)"
    assert opened.errors == [] and opened.foreign_requests == [] and opened.dialogs == []
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    opened.screenshot_views(tmp_path)


def test_the_anatomy_and_the_scaling_anatomy_draw_their_stacked_bars_and_per_rank_switcher(
        open_report: Any, tmp_path: Path) -> None:
    doc = scaling_doc()
    for case in doc["cases"]:
        case["collectors"]["memory_breakdown"] = {"error": None, "categories": memory(10, 10, 20, 30, 2)}
    report = write_report([load_run(write_doc(tmp_path / "run", doc))], tmp_path / "anatomy.html")
    opened = open_report(report)
    page = opened.page
    assert "anatomy" in opened.views()
    # Step, memory and the per-rank switcher in the Anatomy view; throughput and anatomy in Scaling.
    assert page.locator("#view-anatomy .plot").count() == 3
    assert page.locator("#view-scaling .plot").count() == 2
    assert _plots_drawn(page) == page.locator(".plot").count()
    assert page.locator("#view-anatomy .js-plotly-plot g.trace.bars").count() >= 6
    assert page.locator("#view-anatomy svg text", has_text="rank 3 (slowest)").count() >= 1
    assert opened.errors == [] and opened.foreign_requests == [] and opened.dialogs == []
    opened.screenshot_views(tmp_path)


def test_a_report_that_links_plotlyjs_says_so_offline_instead_of_failing_silently(
        open_report: Any, tmp_path: Path) -> None:
    report = write_report([load_run(write_doc(tmp_path / "run", make_doc(4)))], tmp_path / "r.html",
                          inline_plotlyjs=False)
    opened = open_report(report)
    assert len(opened.foreign_requests) == 1 and opened.foreign_requests[0].startswith("https://cdn.plot.ly/")
    assert opened.page.locator(".plot-missing").first.inner_text() == (
        "plotly.js could not be loaded, so this chart is not shown.")
    # The tables still work without plotly.js.
    assert opened.page.locator("table#results tbody tr").count() == 4
    assert json.loads(opened.page.locator("body").evaluate("b => JSON.stringify(b.dataset)"))["ready"] == "1"


def test_a_chart_of_hundreds_of_cases_comes_folded_and_draws_when_opened(open_report: Any, tmp_path: Path) -> None:
    run = load_run(write_doc(tmp_path / "many", make_doc(240, gpu=False, n_samples=20, scaling=False, profile=False)))
    opened = open_report(write_report([run], tmp_path / "many.html"))
    page = opened.page
    folded = page.locator("#view-step-time details.section")
    assert folded.locator("summary").inner_text() == (
        "Step time per case (box: quartiles; whiskers: 1.5 IQR) (a tall chart: open to draw it)")
    assert folded.locator(".js-plotly-plot").count() == 0
    folded.locator("summary").click()
    page.wait_for_selector("#view-step-time .js-plotly-plot svg.main-svg")
    assert page.locator("#view-step-time g.trace.boxes path.box").count() == 238  # the ok cases
    assert opened.errors == [] and opened.foreign_requests == []


def test_a_report_in_rounds_draws_its_findings_effects_panels_and_trials(open_report: Any, tmp_path: Path) -> None:
    # Version 2 with an MLP 100x faster than a CNN: findings, a forest plot, throughput in a panel
    # per model, and each case's trials picked from a list.
    doc = make_doc(24, version=2, model_speed={"mlp": 50.0})
    run = load_run(write_doc(tmp_path / "run", doc))
    opened = open_report(write_report([run], tmp_path / "report.html"))
    page = opened.page
    assert opened.views() == ["summary", "effects", "throughput", "trials", "step-time", "scaling", "memory", "gpu",
                              "profile", "flops"]
    findings = page.locator("#view-summary .findings li").all_inner_texts()
    assert findings[0].startswith("Fastest: mlp-") and "Slowest: cnn-" in findings[0]
    assert findings[1].startswith("model: the largest effect is cnn vs mlp, ")
    # The environment is folded; the findings come before the runs' metadata.
    environment = page.locator("#view-summary details", has_text="Environment fingerprint")
    assert environment.get_attribute("open") is None
    assert not page.locator("#view-summary td", has_text="Python").first.is_visible()
    visible = page.locator(".plot").evaluate_all("els => els.filter(e => !e.closest('details:not([open])')).length")
    assert _plots_drawn(page) == visible
    # The forest plot: a point per effect, in a panel per parameter around 0%.
    effects = page.locator("#view-effects")
    assert effects.locator("g.trace.scatter .point").count() == len(run.doc.effects) == 6
    assert effects.locator(".xtick text", has_text="0%").count() >= 3
    # Throughput: each model's panel has its own x axis (the CNN's ticks stay in the thousands).
    first = page.locator("#view-throughput .js-plotly-plot").first
    mlp_ticks, cnn_ticks = (first.locator(f".{axis}tick text").all_text_contents() for axis in ("x", "x2"))
    assert max(float(t.replace(",", "").replace("k", "e3")) for t in mlp_ticks) > 100_000
    assert max(float(t.replace(",", "").replace("k", "e3")) for t in cnn_ticks) < 2_000
    # The trials: picking another case redraws its trials; the first case's unstable trial is marked.
    trials = page.locator("#view-trials")
    assert trials.locator("g.trace.scatter").count() == 2  # trial medians, and the unstable one
    trials.locator("select").select_option(index=1)
    page.wait_for_function("id => document.querySelector('#view-trials .gtitle').textContent === id",
                           arg=run.cases[1].id)
    assert trials.locator("g.trace.scatter").count() == 1
    assert trials.locator("g.trace.scatter .point").count() == 8
    assert trials.locator(".shapelayer path").count() == 2  # the interval's band and the median
    # World size is a category: a tick per size measured, none between.
    ticks = page.locator("#view-scaling .x3tick text").all_text_contents()  # DP's efficiency panel
    assert ticks == ["1", "2", "4", "8"]
    assert opened.errors == [] and opened.foreign_requests == [] and opened.dialogs == []
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    opened.screenshot_views(tmp_path)


def test_the_ab_page_leads_with_its_verdicts_and_draws_each_cases_pairs(open_report: Any, tmp_path: Path) -> None:
    import random

    from bench.records import ABDoc
    from bench.report import ab as ab_report

    doc = make_doc(3, version=2, problems=False, profile=False, scaling=False, gpu=False)
    for label in ("base", "new"):
        write_doc(tmp_path / label, doc)
    rng = random.Random(1)
    ids = [c["id"] for c in doc["cases"]]
    ratios = [rng.gauss(-0.08, 0.05) for _ in range(60)]
    stage = {"launches": 3, "pairs": 30, "answer": "regression", "ratio": 0.92, "low": 0.9, "high": 0.94, "p": 1e-6,
             "sd": 0.05, "stop_reason": "answer", "measured_s": 6.0}
    case = {"id": ids[0], "params": doc["cases"][0]["params"], "verdict": "regression", "ratio": 0.92, "low": 0.9,
            "high": 0.94, "confidence": 0.99, "p": 1e-9, "p_adjusted": 2e-9, "pairs": 60, "launches": 6,
            "message": f"regression {EVIL}", "stages": [{**stage, "kind": "initial"}, {**stage, "kind": "confirmation"}],
            "log_ratios": ratios, "base_first": [i % 2 == 0 for i in range(60)],
            "stage_of_pair": [0] * 30 + [1] * 30, "launch_of_pair": [i // 10 for i in range(60)],
            "launch_ratios": [sum(ratios[k * 10:(k + 1) * 10]) / 10 for k in range(6)],
            "pair_start_s": [0.2 * i for i in range(60)]}
    other = {"id": ids[1], "params": doc["cases"][1]["params"], "verdict": "skipped", "message": "skipped: ddp",
             "error": "ddp"}
    side = {"spec": ".", "directory": str(tmp_path), "python": "python"}
    ab_doc = ABDoc.model_validate({
        "kind": "ab", "suite": doc["suite"], "run": doc["run"], "environment": doc["environment"],
        "base": {**side, "label": "base"}, "new": {**side, "label": "new"},
        "settings": {"threshold": 0.03, "confidence": 0.99, "pairs_per_launch": 10, "min_launches": 8,
                     "check_every": 2, "max_launches": 24, "max_time": 75.0, "half_windows": 2, "confirm": True,
                     "order_seed": 3},
        "cases": [case, other]})
    page_path = tmp_path / "ab.html"
    page_path.write_text(ab_report.html(ab_doc, tmp_path), encoding="utf-8")
    opened = open_report(page_path)
    page = opened.page
    assert opened.views()[0] == "ab"
    verdicts = page.locator("#view-ab table").first
    assert "regression" in verdicts.inner_text() and "confirmed: 3 fresh launches said regression" in verdicts.inner_text()
    assert EVIL in verdicts.inner_text()  # shown as text, never run
    # Six launches in two colours and their 60 pairs, all drawn.
    assert page.locator("#view-ab .js-plotly-plot g.trace.scatter .point").count() == 66
    assert opened.errors == [] and opened.foreign_requests == [] and opened.dialogs == []
    page.locator("#view-ab").screenshot(path=str(tmp_path / "view-ab.png"))

"""A corpus of script-injection payloads in suite names, case ids, parameters and error texts: the
report opened in a real Chromium shows each as text and runs none of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_report_browser import CHROMIUM, browser, open_report  # noqa: F401 (fixtures)
from test_report_synthetic import EVIL, make_doc

from bench.report import write_report
from bench.results import load_run

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]

# Each payload sets window.__pwned if it ever runs, whatever context it lands in: HTML text, an
# attribute, an inlined <script> holding figure JSON, a plotly label, a template expression.
PAYLOADS = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=1</script>",
    '</script><script>window.__pwned=1</script>',
    '"><svg onload="window.__pwned=1">',
    "'><img src=x onerror='window.__pwned=1'>",
    '<iframe srcdoc="<script>parent.__pwned=1</script>">',
    "javascript:window.__pwned=1",
    "{{ 7*7 }}{% raw %}",
    "<!--<script>window.__pwned=1</script>",
    "line\u2028sep\u2029<b onmouseover=window.__pwned=1>x</b>",
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_a_hostile_string_in_names_params_and_errors_shows_as_text_and_runs_nothing(
        payload: str, open_report: Any, tmp_path: Path) -> None:  # noqa: F811
    # The synthetic run puts EVIL in the suite name, a case id, a parameter and an error text, and
    # from there into the findings, the paired effects and the trials; swap in this payload everywhere.
    text = json.dumps(make_doc(6, evil=True, version=2)).replace(json.dumps(EVIL)[1:-1], json.dumps(payload)[1:-1])
    results = tmp_path / "run" / "results.json"
    results.parent.mkdir()
    results.write_text(text, encoding="utf-8")
    report = write_report([load_run(results)], tmp_path / "report.html")
    opened = open_report(report)
    page = opened.page
    page.wait_for_timeout(300)  # event handlers would have fired by now
    page.mouse.move(10, 10)
    assert page.evaluate("window.__pwned") is None
    assert opened.dialogs == []
    assert page.locator("iframe").count() == 0
    assert payload in page.locator("h1").inner_text()
    assert page.locator("table#results td", has_text=payload).count() >= 1
    assert page.locator("#view-effects td", has_text=payload).count() >= 1  # the parameter's value
    assert page.locator("#view-summary .findings li", has_text=payload).count() >= 1
    assert "49" not in page.locator("h1").inner_text()  # no template evaluation
    assert opened.errors == [] and opened.foreign_requests == []

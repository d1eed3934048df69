"""report.html of a large fleet: the page carries the fleet view, each host's details are files beside it
(report-hosts/N.js), loaded from file:// in Chromium when the host is opened; a small fleet's page holds all."""

from __future__ import annotations

from pathlib import Path

import pytest
from dropscope import render_html
from dropscope.report import write_reports
from dropscope_lab.synthetic import drop, simple_host, write_run
from playwright.sync_api import Browser, expect


def _fleet(run_dir: Path) -> Path:
    hosts = [simple_host(f"h{n}", [drop("NO_SOCKET", "__udp4_lib_rcv", 10 * n)], protocols={"UdpNoPorts": 10 * n})
             for n in range(1, 8)]  # fmt: skip
    return write_run(run_dir, hosts)


def test_a_small_fleet_page_holds_everything(tmp_path: Path) -> None:
    run_dir = _fleet(tmp_path / "run")
    _, html_path, _ = write_reports(run_dir)
    assert not (run_dir / "report-hosts").exists()
    page = html_path.read_text(encoding="utf-8")
    assert "'self'" not in page  # the CSP allows the one inline script only
    assert '"detail_dir":null' in page


def test_details_go_to_files_above_the_size_and_load_when_opened(
    tmp_path: Path, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _fleet(tmp_path / "run")
    (run_dir / "report-hosts").mkdir()
    (run_dir / "report-hosts" / "stale.js").write_text("stale")  # an earlier render's folder is replaced
    monkeypatch.setattr(render_html, "DETAILS_INLINE_MAX_BYTES", 0)
    monkeypatch.setattr(render_html, "DETAIL_CHUNK", 3)
    _, html_path, _ = write_reports(run_dir)

    files = sorted(path.name for path in (run_dir / "report-hosts").iterdir())
    assert files == ["0.js", "1.js", "2.js"]  # 7 hosts, 3 per file
    assert (run_dir / "report-hosts" / "1.js").read_text().startswith('dropscopeDetails(1,{"strings":["')
    assert "script-src 'sha256-" in html_path.read_text() and "'self'" in html_path.read_text()

    page = browser.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("request", lambda request: requests.append(request.url.removeprefix(run_dir.as_uri() + "/")))
    page.goto(html_path.as_uri())
    page.locator("#host-matrix tbody td.host a", has_text="h5").click()  # the 5th host: file 1
    expect(page.locator("#host-detail section.host h2")).to_have_text("h5")
    assert page.locator("#host-detail .finding").first.get_attribute("data-key") == "NO_SOCKET"
    page.locator("#host-matrix tbody td.host a", has_text="h4").click()  # the same file, loaded once
    expect(page.locator("#host-detail section.host h2")).to_have_text("h4")
    assert requests == ["report.html", "report-hosts/1.js"]
    assert errors == []
    page.close()

    monkeypatch.setattr(render_html, "DETAILS_INLINE_MAX_BYTES", 4 * 2**20)
    write_reports(run_dir)  # fits the page again: the folder goes
    assert not (run_dir / "report-hosts").exists()
    assert [path.name for path in run_dir.iterdir() if path.name.startswith(".")] == []

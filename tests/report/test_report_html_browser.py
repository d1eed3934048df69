"""report.html in real headless Chromium: self-contained, hostile names inert, sorting and filtering work.

The page embeds the hosts as JSON and its script draws the host table's visible rows and the one host
that is opened (by its link / #host-N), so hosts are looked at in the table and in the opened section.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from dropscope.build import build_report
from dropscope.render_html import render_html
from dropscope_lab.synthetic import (
    advance,
    drop,
    make_capture,
    make_host,
    make_interface,
    make_snapshot,
    simple_host,
    write_run,
)
from playwright.sync_api import Browser, Locator, Page, expect

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

HOSTILE_HOST = "<script>window.__pwned=1</script>"
HOSTILE_INTERFACE = '<img src=x onerror="window.__pwned=1">'
OTHER_HOSTILE = ['<b>x"', "a'$(id)"]


def _hostile_fleet() -> list[dict]:
    boot_id = "5a11ed00-0000-4000-8000-000000000001"
    before = make_snapshot(HOSTILE_HOST, boot_id=boot_id)
    before["interfaces"][HOSTILE_INTERFACE] = make_interface(base=10)
    after = advance(before, 4.0, interfaces={HOSTILE_INTERFACE: {"rx_dropped": 12}, "eth0": {"tx_dropped": 3}})
    hostile = make_host(
        HOSTILE_HOST,
        before=before,
        capture=make_capture(boot_id, [drop("NO_SOCKET", "__udp4_lib_rcv", 300), drop("XDP", "bpf_prog_run_xdp", 1)]),
        after=after,
    )
    hosts = [
        hostile,
        simple_host(OTHER_HOSTILE[0], [drop("NETFILTER_DROP", "nft_do_chain", 500)], protocols={"UdpNoPorts": 3}),
        simple_host(
            OTHER_HOSTILE[1], [drop("QDISC_DROP", "__dev_xmit_skb", 180), drop("NO_SOCKET", "__udp4_lib_rcv", 9)]
        ),
        simple_host("alpha.example", [drop("SOCKET_RCVBUFF", "__udp_enqueue_schedule_skb", 42)]),
        simple_host("zulu.example", [drop("TCP_OLD_DATA", "tcp_data_queue", 7)], softnet={0: {"dropped": 2}}),
        make_host("down.example", status="unreachable", error="ssh: connect to host down.example port 22: timed out"),
        simple_host("broken.example", [drop("NO_SOCKET", "__udp4_lib_rcv", 5)]),  # its file gets truncated
    ]
    return hosts


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = write_run(tmp_path_factory.mktemp("html") / "run", _hostile_fleet())
    (run_dir / "hosts" / "broken.json").write_text("{")  # stray file: a warning on the page
    truncated = run_dir / "hosts" / "broken.example.json"
    truncated.write_text(truncated.read_text()[:500])
    report = build_report(run_dir)
    path = run_dir / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path, report


@pytest.fixture
def page(browser: Browser, report_file: tuple[Path, dict]) -> Iterator[Page]:
    """The report loaded in a fresh page; records page errors, console errors and every request."""
    path, _ = report_file
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.errors = []  # type: ignore[attr-defined]
    page.console_errors = []  # type: ignore[attr-defined]
    page.requests = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: page.errors.append(str(error)))  # type: ignore[attr-defined]
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)  # type: ignore[attr-defined]
    page.on("request", lambda request: page.requests.append(request.url))  # type: ignore[attr-defined]
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    yield page
    page.close()


def test_page_loads_offline_with_no_errors(page: Page, report_file: tuple[Path, dict]) -> None:
    path, _ = report_file
    assert page.errors == []  # type: ignore[attr-defined]
    assert page.console_errors == []  # type: ignore[attr-defined]  (a CSP violation would show here)
    assert page.requests == [path.as_uri()]  # type: ignore[attr-defined]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)


def _open_host(page: Page, name: str) -> Locator:
    """Click a host's link in the table; returns its opened section."""
    page.locator("#host-matrix tbody td.host a").filter(has_text=re.compile(f"^{re.escape(name)}$")).click()
    section = page.locator("#host-detail section.host")
    # The section is drawn on the hash change that follows the click: wait for it, do not race it.
    expect(section.locator("h2")).to_have_text(name)
    return section


def test_every_host_and_reason_is_shown(page: Page, report_file: tuple[Path, dict]) -> None:
    _, report = report_file
    host_names = [host["host"] for host in report["hosts"]]
    assert page.locator("#host-matrix tbody td.host a").all_text_contents() == [
        OTHER_HOSTILE[0],  # 500 drops
        HOSTILE_HOST,  # 301
        OTHER_HOSTILE[1],  # 189
        "alpha.example",
        "zulu.example",
        "broken.example",  # failed before unreachable at 0 drops
        "down.example",
    ]  # worst first: verdict, then drops
    assert page.locator("#host-matrix tbody td:nth-child(2)").all_text_contents() == [
        "problem", "problem", "problem", "problem", "warning", "unknown", "unknown"
    ]
    matrix_hosts = page.locator("#host-matrix tbody td.host a").all_text_contents()
    assert sorted(matrix_hosts) == sorted(host_names)
    assert page.locator("section.host").count() == 0  # no host is drawn until one is opened
    body = page.locator("body").inner_text()
    for reason in ("NO_SOCKET", "NETFILTER_DROP", "QDISC_DROP", "SOCKET_RCVBUFF", "TCP_OLD_DATA", "XDP"):
        assert page.locator("#host-matrix thead th", has_text=reason).count() == 1
        assert reason in body
    assert page.locator("#fleet-drops").inner_text() == f"{report['fleet']['drops']:,}"
    assert "hosts/broken.json is not listed in manifest.json" in body
    assert "ssh: connect to host down.example port 22: timed out" in body
    assert "hosts/broken.example.json: not valid JSON" in body


def test_hostile_names_are_inert_text(page: Page) -> None:
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    assert page.locator("b").count() == 0
    assert page.locator("script").count() == 2  # the page's own script and its JSON data
    assert page.locator('script[type="application/json"]').count() == 1
    section = _open_host(page, HOSTILE_HOST)
    assert page.get_by_text(HOSTILE_HOST, exact=True).count() >= 2  # table link and section heading
    interface_cells = section.locator(".counters-interfaces td code", has_text=HOSTILE_INTERFACE)
    assert interface_cells.count() == 1 and interface_cells.first.inner_text() == HOSTILE_INTERFACE
    assert HOSTILE_INTERFACE in section.locator(".finding").first.locator("xpath=..").inner_text()
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0 and page.locator("b").count() == 0
    for name in OTHER_HOSTILE:
        assert _open_host(page, name).locator("h2").inner_text() == name
        assert page.locator("b").count() == 0


def test_the_same_markup_unescaped_would_run(browser: Browser, tmp_path: Path) -> None:
    """Control: proves the checks above can fail in this browser."""
    control = tmp_path / "control.html"
    control.write_text(f"<!DOCTYPE html><html><body><h2>{HOSTILE_HOST}</h2></body></html>")
    page = browser.new_page()
    page.goto(control.as_uri())
    assert page.evaluate("window.__pwned") == 1
    page.close()


def test_csp_allows_exactly_the_inline_script(report_file: tuple[Path, dict]) -> None:
    html = report_file[0].read_text(encoding="utf-8")
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert policy and len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert policy.group(1) == f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    assert "http://" not in html and "https://" not in html


def _matrix_hosts(page: Page) -> list[str]:
    return page.locator("#host-matrix tbody td.host a").all_text_contents()


def _matrix_drops(page: Page) -> list[int]:
    cells = page.locator("#host-matrix tbody tr td:nth-child(4)").all_text_contents()
    return [-1 if text == "–" else int(text.replace(",", "")) for text in cells]


def _header(table: Locator, text: str) -> Locator:
    return table.locator("thead th").filter(has_text=re.compile(f"^{re.escape(text)}$"))


def test_clicking_headers_sorts_tables(page: Page) -> None:
    matrix = page.locator("#host-matrix")
    initial = _matrix_hosts(page)
    assert _matrix_drops(page) == sorted(_matrix_drops(page), reverse=True)

    _header(matrix, "Host").click()
    ascending = _matrix_hosts(page)
    assert ascending == sorted(initial, key=str.lower)
    assert ascending != initial
    assert _header(matrix, "Host").get_attribute("aria-sort") == "ascending"

    _header(matrix, "Host").click()
    assert _matrix_hosts(page) == list(reversed(ascending))

    _header(matrix, "Drops").click()  # numeric: largest first
    assert _matrix_drops(page) == sorted(_matrix_drops(page), reverse=True)
    _header(matrix, "Drops").click()
    assert _matrix_drops(page) == sorted(_matrix_drops(page))

    drops_table = _open_host(page, HOSTILE_HOST).locator("table.drops-table")
    counts = drops_table.locator("tbody td:nth-child(5)")  # Reason, Location, Protocol, Port, Drops
    assert counts.all_text_contents() == ["300", "1"]
    _header(drops_table, "Drops").click()
    _header(drops_table, "Drops").click()
    assert counts.all_text_contents() == ["1", "300"]


def test_filter_box_hides_other_hosts(page: Page) -> None:
    page.locator("#host-filter").fill("example")
    assert sorted(page.locator("#host-matrix tbody tr:visible td.host a").all_text_contents()) == [
        "alpha.example",
        "broken.example",
        "down.example",
        "zulu.example",
    ]
    assert page.locator("#host-matrix tbody tr").count() == 4  # rows not shown are not drawn at all
    assert page.locator("#host-filter-count").inner_text() == "4 of 7 hosts"

    page.locator("#host-filter").fill("unreachable")
    assert page.locator("#host-matrix tbody td.host a").all_text_contents() == ["down.example"]

    page.locator("#host-filter").fill("warning")  # verdicts filter too
    assert page.locator("#host-matrix tbody td.host a").all_text_contents() == ["zulu.example"]

    page.locator("#host-filter").fill("")
    assert page.locator("#host-matrix tbody tr").count() == 7
    assert page.locator("#host-filter-count").inner_text() == ""


def test_host_links_jump_to_sections(page: Page) -> None:
    link = page.locator("#host-matrix tbody td.host a", has_text="zulu.example")
    target = link.get_attribute("href")
    assert target and target.startswith("#host-")
    link.click()
    assert page.evaluate("location.hash") == target
    assert page.locator(f"{target} h2").inner_text() == "zulu.example"


def test_fleet_verdict_first_and_findings_in_the_drill_down(page: Page, report_file: tuple[Path, dict]) -> None:
    _, report = report_file
    verdict = page.locator("#fleet-verdict")
    assert "verdict-problem" in (verdict.get_attribute("class") or "")
    assert verdict.inner_text().startswith("Fleet verdict: PROBLEM")  # text-transform: the DOM says "problem"
    assert verdict.locator("strong").text_content() == report["fleet"]["verdict"] == "problem"
    # The verdict banner comes before the host table in the page.
    assert page.evaluate(
        "document.getElementById('fleet-verdict').compareDocumentPosition(document.getElementById('host-matrix'))"
        " & Node.DOCUMENT_POSITION_FOLLOWING"
    )
    section = _open_host(page, "alpha.example")
    findings = section.locator(".finding")
    assert findings.count() == 1
    finding = findings.first
    assert finding.get_attribute("data-key") == "SOCKET_RCVBUFF"
    assert "sev-problem" in (finding.get_attribute("class") or "")
    assert finding.locator(".explanation").inner_text().startswith("alpha.example: the application on a socket")
    assert "net.core.rmem_max" in finding.locator(".knobs").inner_text()
    assert finding.locator(".advice").inner_text().startswith("Fix: Raise net.core.rmem_max")
    finding.locator("details.evidence summary").click()
    assert "__udp_enqueue_schedule_skb" in finding.locator("table.evidence").inner_text()
    assert section.locator("figure.chart svg g").count() == 1  # one rate bar: SOCKET_RCVBUFF
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-host-findings.png"), full_page=True)


def test_ten_thousand_hosts_load_and_filter_to_one(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The page for 10,000 hosts draws only a page of rows; filtering finds one host and opens it."""
    from dropscope.report import write_reports
    from dropscope_lab.synthetic import synthetic_fleet

    run_dir = write_run(tmp_path_factory.mktemp("big") / "run", synthetic_fleet(10_000, seed=7, unreachable_every=97))
    _, html_path, _ = write_reports(run_dir)
    # The page carries the fleet view; each host's details are in report-hosts/N.js (100 hosts per file).
    assert html_path.stat().st_size < 10 * 2**20
    assert sorted(int(path.stem) for path in (run_dir / "report-hosts").glob("*.js")) == list(range(100))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("request", lambda request: requests.append(request.url.removeprefix(run_dir.as_uri() + "/")))
    page.goto(html_path.as_uri(), timeout=120_000)
    assert requests == ["report.html"]  # nothing but the page until a host is opened
    cohorts = page.locator("#cohorts li.cohort")  # the largest 20 at most; report.json has them all
    assert 1 <= cohorts.count() <= 20
    assert cohorts.first.locator(".size").inner_text().endswith(" of 9,897 hosts")  # the diagnosed ones
    rows = page.locator("#host-matrix tbody tr")
    assert rows.count() == 200  # one page, not 10,000 rows
    assert page.locator("#host-pager .range").inner_text() == "Showing 1–200 of 10,000 hosts"
    page.locator("#host-filter").fill("host04242.")
    assert rows.count() == 1
    assert page.locator("#host-filter-count").inner_text() == "1 of 10,000 hosts"
    page.locator("#host-matrix tbody td.host a").click()
    assert page.locator("#host-detail section.host h2").inner_text() == "host04242.dc1.example"
    assert page.locator("#host-detail .finding").count() >= 1
    assert requests == ["report.html", "report-hosts/42.js"]  # host 4242's file, loaded when it was opened
    page.evaluate("location.hash = '#host-10000'")
    expect(page.locator("#host-detail section.host h2")).to_have_text("host09999.dc1.example")
    assert requests[-1] == "report-hosts/99.js"
    (run_dir / "report-hosts" / "7.js").unlink()
    page.evaluate("location.hash = '#host-701'")
    expect(page.locator("#host-detail p.error")).to_contain_text("report-hosts/7.js next to report.html")
    assert errors == ["Failed to load resource: net::ERR_FILE_NOT_FOUND"]  # the missing 7.js, and nothing else
    errors.clear()
    page.locator("#host-filter").fill("unreachable")
    assert rows.count() == 103  # every 97th host
    page.locator("#host-pager .next").is_hidden()
    assert errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-10000-hosts.png"))
    page.close()


def test_page_opens_with_the_ledger_and_shows_it_per_host(page: Page, report_file: tuple[Path, dict]) -> None:
    """ "N drops, M explained" for the fleet at the top and per host; the ledger table; RX/TX per capture group."""
    _, report = report_file
    assert report["fleet"]["ledger"] == {"drops": 1_059, "explained": 1_039, "unexplained": 20}
    assert page.locator("#fleet-ledger .ledger-sum").inner_text() == "1,059 drops, 1,039 explained"
    assert page.locator("#fleet-ledger .unexplained").inner_text() == "20 unexplained"
    assert page.evaluate(
        "document.getElementById('fleet-ledger').compareDocumentPosition(document.getElementById('fleet'))"
        " & Node.DOCUMENT_POSITION_FOLLOWING"
    )  # before the cards and the host table

    section = _open_host(page, "zulu.example")
    assert section.locator(".host-head .total").inner_text() == "9 drops, 7 explained"
    rows = section.locator("table.ledger-table tbody tr")
    assert [row.locator("td").all_inner_texts() for row in rows.all()] == [
        ["dropped", "2", "\u2013", "2", "kernel"],
        ["no counter (capture only)", "\u2013", "TCP_OLD_DATA 7", "0", "kernel"],
    ]
    assert section.locator("table.drops-table tbody td.dir").all_inner_texts() == ["RX"]
    assert _open_host(page, OTHER_HOSTILE[1]).locator("table.drops-table tbody td.dir").all_inner_texts() == [
        "TX",  # QDISC_DROP
        "RX",  # NO_SOCKET
    ]
    finding = _open_host(page, HOSTILE_HOST).locator('.finding[data-key="unexplained:kernel"]')
    assert finding.locator(".explanation").inner_text().startswith(
        f"{HOSTILE_HOST}: 15 drops counted by the kernel have no captured reason — {HOSTILE_INTERFACE} rx_dropped +12"
    )
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_cohorts_are_shown_above_the_host_table(page: Page, report_file: tuple[Path, dict]) -> None:
    """fleet.cohorts as sentences before the host table; hostile host names in them stay text."""
    _, report = report_file
    assert [cohort["hosts"] for cohort in report["fleet"]["cohorts"]] == [
        [HOSTILE_HOST, *OTHER_HOSTILE],
        [HOSTILE_HOST, OTHER_HOSTILE[0], "zulu.example"],
    ]
    assert page.evaluate(
        "document.getElementById('cohorts').compareDocumentPosition(document.getElementById('host-matrix'))"
        " & Node.DOCUMENT_POSITION_FOLLOWING"
    )
    items = page.locator("#cohorts li.cohort")
    assert items.count() == 2
    assert items.first.inner_text().splitlines() == [
        "problem 3 of 5 hosts: Nobody listens on the destination port (NO_SOCKET); "
        "nothing else they share that the rest lacks",
        f"{HOSTILE_HOST}, {OTHER_HOSTILE[0]}, {OTHER_HOSTILE[1]}",
    ]
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_a_sampled_capture_is_shown_as_estimates(browser: Browser, tmp_path: Path) -> None:
    """The rate guard's 1-in-8 capture: the host says so, findings print ~C ± 2σ, the ledger names the error."""
    before = make_snapshot("sampled.example")
    capture = make_capture(before["system"]["boot_id"], [drop("NO_SOCKET", "__udp4_lib_rcv", 2_400)],
                           backend="bpftrace", scope="netns", duration_s=5.0)
    capture["sample_one_in"] = 8
    host = make_host("sampled.example", before=before, capture=capture,
                     after=advance(before, 5.0, protocols={"UdpNoPorts": 2_900}))
    report = build_report(write_run(tmp_path / "run", [host]))
    path = tmp_path / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    section = _open_host(page, "sampled.example")
    assert section.locator("dl.facts dd").nth(2).inner_text().endswith(
        "2,400 events \u00b7 0 lost \u00b7 counted 1 in 8 (estimates)")
    assert section.locator(".host-head .total").inner_text() == "2,900 drops, 2,900 explained"
    row = section.locator("table.ledger-table tbody tr").first
    assert row.locator("td").all_inner_texts() == [
        "UdpNoPorts\n500 within the sampled estimates' error (1 in 8)", "2,900", "NO_SOCKET 2,400", "0", "kernel"]
    assert "counted 1 in 8 drops (rate guard): its counts are estimates" in section.locator("p.note").inner_text()
    # 2σ of 2,400 at 1 in 8: 2·√(2,400·7) = 260
    assert "kfree_skb saw ~2,400 ± 260 NO_SOCKET at __udp4_lib_rcv" in section.locator(
        '.finding[data-key="NO_SOCKET"] .explanation').inner_text()
    assert errors == []
    page.close()

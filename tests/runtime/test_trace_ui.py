"""The tracing UI in a real browser: Debian's chromium driven by Playwright (no browser download).

Every request that leaves 127.0.0.1 is blocked and recorded: the page must need none. A
screenshot of each page is kept under ``$TETHER_TEST_ARTIFACTS`` (default ``test-artifacts/``).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import uvicorn

from tether.engine.policies import parse_policies
from tether.runtime import tracing
from tether.runtime.tracing.store import list_runs, read_run
from tether.runtime.tracing.ui_server import create_ui_app
from tether.workloads.replay import run_policies
from tether.workloads.replay_common import ReplaySettings

sys.path.insert(0, str(Path(__file__).parents[1] / "workloads"))
from small_trace import small_trace  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("TETHER_TEST_ARTIFACTS", "test-artifacts"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A recorded trace: a small simulated replay under KV pressure (pins, expiries, evictions)."""
    root = tmp_path_factory.mktemp("traces")
    trace = small_trace(programs=6, turns=4, append=60, output=8, tool_s=0.5, gap_s=0.1)
    run_policies(trace, parse_policies("tether"), ReplaySettings(kv_blocks=40, max_num_batched_tokens=256), "sim",
                 trace_dir=root)
    return root


@pytest.fixture(scope="module")
def server(store):
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_ui_app(store), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make setup` installs Debian's chromium package"
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path_factory.mktemp("chromium-profile")),
                                                   executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                   viewport={"width": 1500, "height": 950})
        ctx.blocked = []

        def guard(route):
            if urlparse(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                ctx.blocked.append(route.request.url)
                route.abort()
        ctx.route("**/*", guard)
        yield ctx
        ctx.close()


def _open(browser, url: str):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("window.tetherUI && window.tetherUI.ready", timeout=60_000)
    return page, errors


def test_the_ui_tells_a_programs_story(browser, server, store):
    spans = read_run(list_runs(store)[0])
    kv_events = sum(1 for s in spans if s.name != "tether.kv.pool" for e in s.events
                    if e["name"].startswith("tether.kv.") or e["name"] == "tether.engine.preempted")
    programs = sorted({s.attributes["tether.program.id"] for s in spans if s.name.startswith("invoke_agent")})
    page, errors = _open(browser, server + "/ui/")

    labels = page.locator(".lane-label")
    assert sorted(labels.all_inner_texts()) == programs  # one lane per program, as DOM text
    stats = page.evaluate("window.tetherUI.stats()")
    assert stats["markers"] == kv_events and stats["counter"] > 0
    assert stats["drawn"]["markers"] > 0

    # click a lane's label to zoom to that program, then click its second chat span like a user
    labels.filter(has_text="p2").click()
    chats = [s for s in spans if s.name.startswith("chat ") and s.attributes["tether.program.id"] == "p2"]
    chat = sorted(chats, key=lambda s: s.start_ns)[1]
    i = page.evaluate(f"window.tetherUI.find(s => s.id === '{chat.span_id}')[0]")
    box = page.evaluate(f"window.tetherUI.boxOf({i})")
    assert box is not None, "the span is not drawn after zooming to its program"
    page.mouse.click(box["x"] + min(box["w"] / 2, 20), box["y"] + box["h"] / 2)
    detail = page.locator("#detail")
    assert detail.locator("h2").first.inner_text() == chat.name
    a = chat.attributes
    assert detail.locator("[data-fact=tokens]").inner_text() == \
        f"tokens: input {a['gen_ai.usage.input_tokens']:,}, output {a['gen_ai.usage.output_tokens']:,}"
    assert detail.locator("[data-fact='cached tokens']").inner_text().startswith(
        f"cached tokens: {a['gen_ai.usage.cache_read.input_tokens']:,} (")
    assert detail.locator("[data-fact=TTFT]").inner_text().startswith("TTFT: ")
    assert "queue" in detail.locator("[data-fact=engine]").inner_text()
    assert "gen_ai.usage.cache_read.input_tokens" in detail.inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "trace_ui_small_replay.png"))

    # the agent table: every turn of the replay is an LLM call of its one agent
    row = page.locator("#agents tbody tr").first.locator("td").all_inner_texts()
    assert row[0] == "replay" and int(row[1]) == sum(1 for s in spans if s.name.startswith("chat "))

    # filters
    page.fill("#f-program", "p3")
    assert page.locator(".lane-label").all_inner_texts() == ["p3"]
    page.fill("#f-program", "")
    tool = next(s.attributes["gen_ai.tool.name"] for s in spans if s.name.startswith("execute_tool"))
    page.select_option("#f-tool", tool)
    with_tool = {s.attributes["tether.program.id"] for s in spans
                 if s.name.startswith("execute_tool") and s.attributes["gen_ai.tool.name"] == tool}
    assert sorted(page.locator(".lane-label").all_inner_texts()) == sorted(with_tool)
    assert errors == [] and browser.blocked == []


def _big_store(root: Path, programs: int = 260, turns: int = 10) -> Path:
    """A run of 13,000+ spans written through the tracer, with explicit times."""
    from opentelemetry import trace as otel_trace
    run = tracing.enable(root, kind="big", batch=True, export_env=False)
    t = tracing.tracer()
    base = time.time_ns()
    for p in range(programs):
        at = base + p * 2_000_000_000
        prog = t.start_span(f"invoke_agent big-{p:04d}", start_time=at, attributes={
            "tether.program.id": f"big-{p:04d}", "tether.span.kind": "program", "gen_ai.agent.name": "big"})
        ctx = otel_trace.set_span_in_context(prog)
        for k in range(turns):
            chat = t.start_span("chat big", context=ctx, start_time=at, attributes={
                "tether.program.id": f"big-{p:04d}", "gen_ai.usage.input_tokens": 100 + k,
                "gen_ai.agent.name": "big"})
            cctx = otel_trace.set_span_in_context(chat)
            for name, dur in (("tether.engine.queue", 1), ("tether.engine.prefill", 3), ("tether.engine.decode", 6)):
                s = t.start_span(name, context=cctx, start_time=at)
                if name == "tether.engine.prefill":
                    s.add_event("tether.kv.prefix_hit", {"tether.kv.tokens": 64}, timestamp=at)
                at += dur * 10_000_000
                s.end(end_time=at)
            chat.end(end_time=at)
            tool = t.start_span("execute_tool shell", context=ctx, start_time=at,
                                attributes={"gen_ai.tool.name": "shell"})
            at += 50_000_000
            tool.end(end_time=at)
        prog.end(end_time=at)
    tracing.disable()
    return run


def test_ten_thousand_spans_stay_responsive(browser, tmp_path):
    run = _big_store(tmp_path)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_ui_app(run), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    while not srv.started:
        time.sleep(0.05)
    try:
        page, errors = _open(browser, f"http://127.0.0.1:{port}/ui/")
        stats = page.evaluate("window.tetherUI.stats()")
        assert stats["spans"] >= 13_000 and stats["lanes"] == 260
        # virtualized: only the lanes in view are drawn
        assert 0 < stats["drawn"]["spans"] < stats["spans"] / 4
        page.evaluate("document.getElementById('scroller').scrollTop = 1e9")
        page.wait_for_function("window.tetherUI.stats().drawn.spans > 0")
        ms = page.evaluate("""() => { const t = performance.now();
            for (let i = 0; i < 10; i++) document.getElementById('zoom-in').click();
            for (let i = 0; i < 10; i++) document.getElementById('zoom-out').click();
            return (performance.now() - t) / 20; }""")
        print(f"redraw with {stats['spans']} spans: {ms:.1f} ms per zoom step")  # information, not a test
        assert page.locator(".lane-label").last.inner_text() == "big-0259"
        assert page.evaluate("window.tetherUI.stats().drawn.spans") > 0  # the last lanes, at the whole run
        page.screenshot(path=str(ARTIFACTS / "trace_ui_13k_spans.png"))
        assert errors == [] and browser.blocked == []
    finally:
        srv.should_exit = True
        th.join(10)

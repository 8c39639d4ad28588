"""Screenshots of the tracing UI (headless Debian chromium via Playwright), as in this folder's README.

    python shoot.py URL OUT.png [--window START_S END_S] [--select-agent AGENT] [--lane N]

Opens URL (a running `tether ui`), optionally zooms the time axis to [START_S, END_S] seconds,
clicks the first chat span of agent AGENT (or of lane N) like a user, and saves a screenshot.
"""

import argparse
import tempfile

from playwright.sync_api import sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

p = argparse.ArgumentParser()
p.add_argument("url")
p.add_argument("out")
p.add_argument("--window", nargs=2, type=float)
p.add_argument("--select-agent")
p.add_argument("--lane", type=int, default=0)
p.add_argument("--scroll-lane", type=int, default=0, help="scroll so this lane is at the top")
args = p.parse_args()
with sync_playwright() as pw:
    ctx = pw.chromium.launch_persistent_context(tempfile.mkdtemp(), executable_path="/usr/bin/chromium",
                                                headless=True, args=FLAGS, viewport={"width": 1600, "height": 1000})
    page = ctx.new_page()
    page.goto(args.url)
    page.wait_for_function("window.tetherUI && window.tetherUI.ready", timeout=120_000)
    if args.window:
        page.evaluate(f"""() => {{ const s = window.tetherUI; s.setWindow({args.window[0] * 1000}, {args.window[1] * 1000}); }}""")
    if args.scroll_lane:
        page.evaluate(f"document.getElementById('scroller').scrollTop = {args.scroll_lane} * 64")
    agent = f"&& s.attrs['gen_ai.agent.name'] === {args.select_agent!r}" if args.select_agent else ""
    ids = page.evaluate(f"window.tetherUI.find(s => s.kind === 'chat' && s.lane === {args.lane} {agent})")
    for i in ids:
        box = page.evaluate(f"window.tetherUI.boxOf({i})")
        if box and box["w"] > 4:
            page.mouse.click(box["x"] + min(box["w"] / 2, 30), box["y"] + box["h"] / 2)
            break
    page.screenshot(path=args.out)
    print(args.out, page.evaluate("window.tetherUI.stats()"))
    ctx.close()

#!/usr/bin/python3
"""Drives the web console in headless Chromium (Debian's chromium,
chromium-driver and python3-selenium) against a running gateway, as a person
would, and checks what it shows.

usage: drive.py BASE_URL STATS_JSON MESSAGE_ID [--screenshots DIR]

  BASE_URL    the gateway, e.g. http://127.0.0.1:43210
  STATS_JSON  `heraldctl stats --json` taken while nothing moves: every
              topic's published count, every subscription's and function's
              counters must be what the pages show
  MESSAGE_ID  a dead letter to find on the dead-letters page, open (every
              attempt, the payload) and replay through the page
  --screenshots DIR   also saves one PNG per page there (make console-screenshots)

Exit 0 when every check held; otherwise the first failure on stderr, exit 1.
"""
import json
import os
import sys
import tempfile

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WAIT_S = 30


def fail(msg):
    print(f"drive.py: {msg}", file=sys.stderr)
    sys.exit(1)


def browser():
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.add_argument("--user-data-dir=" + tempfile.mkdtemp(prefix="herald-chromium-"))
    opts.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def text_of(d, sel):
    """The text of the first element matching sel, read in one step (the
    pages redraw their tables every 2 s: an element held across calls goes
    stale), or None."""
    return d.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", sel)


def cell_sel(table, row, col):
    return f'#{table} tr[data-row="{row}"] td[data-col="{col}"]'


def expect_cell(d, table, row, col, want):
    sel = cell_sel(table, row, col)
    try:
        WebDriverWait(d, WAIT_S).until(lambda d: text_of(d, sel) == str(want))
    except TimeoutException:
        fail(f"{table}[{row}].{col} shows {text_of(d, sel)!r}, heraldctl stats says {want!r}")


def page(d, base, name, shots):
    d.get(f"{base}/console/#{name}")
    WebDriverWait(d, WAIT_S).until(
        lambda d: d.find_element(By.ID, f"page-{name}").get_attribute("class").split().count("active"))
    return name


def shot(d, shots, name):
    if shots:
        d.save_screenshot(os.path.join(shots, f"console-{name}.png"))


def main():
    args = sys.argv[1:]
    shots = None
    if "--screenshots" in args:
        i = args.index("--screenshots")
        shots = args[i + 1]
        del args[i:i + 2]
        os.makedirs(shots, exist_ok=True)
    if len(args) != 3:
        fail(__doc__)
    base, stats_path, mid = args
    with open(stats_path) as f:
        st = json.load(f)
    d = browser()
    try:
        # Overview: every topic and subscription as heraldctl says.
        page(d, base, "overview", shots)
        for t in st["topics"]:
            expect_cell(d, "topics", t["name"], "published", t["published"])
        for s in st["subscriptions"]:
            for col in ("ready", "delayed", "inflight", "dead", "succeeded", "failed"):
                expect_cell(d, "subscriptions", f"{s['topic']}→{s['function']}", col, s[col])
        WebDriverWait(d, WAIT_S).until(lambda d: "broker up" in d.find_element(By.ID, "status").text)
        if shots:   # a few samples, so that the chart has lines
            WebDriverWait(d, WAIT_S).until(lambda d: d.execute_script("return history.length") >= 4)
        shot(d, shots, "overview")

        # Functions: every counter.
        page(d, base, "functions", shots)
        for fn in st["functions"]:
            for col in ("kind", "invocations", "errors", "timeouts", "rejected", "crashed", "lost"):
                expect_cell(d, "functions", fn["name"], col, fn[col])
        shot(d, shots, "functions")

        # Workers: each connected one.
        page(d, base, "workers", shots)
        for w in st["workers"]:
            expect_cell(d, "workers", w["id"], "slots", w["slots"])
        shot(d, shots, "workers")

        # Schedules.
        page(d, base, "schedules", shots)
        WebDriverWait(d, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#schedules tr[data-row]"))
        shot(d, shots, "schedules")

        # Dead letters: find MESSAGE_ID, open it, replay it with confirmation.
        page(d, base, "dlq", shots)
        sel = "#dlq tr[data-row]"
        WebDriverWait(d, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, sel))
        ids = d.execute_script(
            "return Array.from(document.querySelectorAll('#dlq tr[data-row]'), r => "
            "[r.dataset.row, r.querySelector('td[data-col=\"message_id\"]').textContent]);")
        rows = [row for row, m in ids if m == mid]
        if len(rows) != 1:
            fail(f"dead letter {mid} is on the page {len(rows)} times")
        d.find_element(By.CSS_SELECTOR, f'#dlq tr[data-row="{rows[0]}"]').click()
        WebDriverWait(d, WAIT_S).until(lambda d: d.find_element(By.ID, "dlq-detail").is_displayed())
        err = text_of(d, '#detail-history tr[data-row] td[data-col="error"]')
        if not err or "not fixed" not in err:
            fail(f"the dead letter's attempts do not show its error text: {err!r}")
        if text_of(d, "#detail-payload") != "first event":
            fail(f"the dead letter's payload shows {text_of(d, '#detail-payload')!r}, not 'first event'")
        shot(d, shots, "dlq")
        d.find_element(By.ID, "detail-replay").click()
        WebDriverWait(d, WAIT_S).until(lambda d: d.find_element(By.ID, "confirm").is_displayed())
        text = d.find_element(By.ID, "confirm-text").text
        if not text.startswith("Replay 1 dead letter?"):
            fail(f"the confirmation says {text!r}, not how many it replays (1)")
        d.find_element(By.ID, "confirm-yes").click()
        WebDriverWait(d, WAIT_S).until(lambda d: d.find_element(By.ID, "dlq-message").text == "replayed 1")
    finally:
        d.quit()
    print("drive.py: every page checked; the dead letter was replayed")


if __name__ == "__main__":
    main()

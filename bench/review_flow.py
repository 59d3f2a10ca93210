"""The blind review end to end in a real browser, timed: sign in, label a feature, create a review of N neurons and
N features, rate every item with the keyboard only, open the results.

    .venv/bin/python bench/review_flow.py --db sqlite:///monoscope.db [--per-basis 10] [--sae topk-4096]

Needs Debian's Chromium (/usr/bin/chromium) and a database with a neuron basis and the SAE (`make demo` makes one).
Creates a user `bench-<time>` and a review of that name; prints the medians the results page shows and the time per
item (type a hypothesis, set five criteria, save, load the next item).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

MONOSCOPE = Path(sys.executable).with_name("monoscope")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite:///monoscope.db")
    parser.add_argument("--per-basis", type=int, default=10)
    parser.add_argument("--sae", default="topk-4096")
    parser.add_argument("--screenshots", type=Path, help="Keep screenshots of the first item, scrolled to its "
                        "bottom, of the last and of the results in this folder")
    args = parser.parse_args()
    name = f"bench-{int(time.time())}"
    added = subprocess.run([str(MONOSCOPE), "user", "add", name, "--db", args.db], capture_output=True, text=True)
    if added.returncode:
        sys.exit(added.stderr.strip())
    token = added.stdout.strip().splitlines()[-1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(MONOSCOPE), "serve", "--db", args.db, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                httpx.get(url + "/static/monoscope.css")
                break
            except httpx.TransportError:
                time.sleep(0.2)
        run(url, token, name, args)
    finally:
        server.terminate()


def run(url: str, token: str, name: str, args) -> None:
    n_items = 2 * args.per_basis
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url + "/login")
        page.fill("#token", token)
        page.click("#sign-in")
        page.wait_for_url(url + "/")
        page.goto(f"{url}/bases/{args.sae}/units/17")
        page.fill("#label-form input[name=text]", f"{name} label")
        page.press("#label-form input[name=text]", "Enter")
        page.wait_for_selector("#current-label")
        page.goto(url + "/reviews")
        page.fill("#new-review input[name=name]", name)
        page.fill("#new-review input[name=per_basis]", str(args.per_basis))
        page.click("#new-review button[type=submit]")
        page.click("#rate")
        times = []
        for step in range(1, n_items + 1):
            started = time.time()
            page.wait_for_selector("#score-form[data-keys-bound]")
            assert f"Item {step} of {n_items}" in page.inner_text("h1")
            if args.screenshots and step in (1, n_items):
                shoot(page, args.screenshots, f"item-{step}")
                page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
                shoot(page, args.screenshots, f"item-{step}-bottom")
                page.evaluate("window.scrollTo(0, 0)")
                page.focus("#hypothesis")
            page.keyboard.type(f"hypothesis {step}")
            perfect = step % 3 == 0
            for key in (str(step % 4), str(step % 6), "3" if perfect else "1", None if perfect else "1", "2"):
                page.keyboard.press("Tab")
                if key:
                    page.keyboard.press(key)
            page.keyboard.press("Enter")
            page.wait_for_load_state()
            times.append(time.time() - started)
        page.wait_for_selector("#results")
        page.click("#results")
        page.wait_for_selector("#totals-plot .main-svg")
        if args.screenshots:
            shoot(page, args.screenshots, "results", full_page=True)
        print(page.inner_text("#medians"))
        print(f"revealed items: {page.locator('#revealed tbody tr').count()} of {n_items}")
        times.sort()
        print(f"per item (type, five criteria, save, next page): median {times[len(times) // 2]:.2f} s, "
              f"max {times[-1]:.2f} s")
        browser.close()


def shoot(page, folder: Path, name: str, full_page: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)


if __name__ == "__main__":
    main()

"""Screenshots of a run's report.html and of a tuning report as a person sees them, with
headless Chromium.

Publishes two small runs on synthetic interactions (an ``als`` and a ``popular`` model,
a random split; the second run gives ALS more factors and iterations, so the report
shows a change against the previous run), renders the second run's report with the first
as ``previous``, and writes ``report-shot.html``, ``report-1400.png`` (desktop) and
``report-390.png`` (phone) to the output folder; then searches ALS's params for a few
trials (``recsys tune``'s study, pruning on) and writes its report the same way, as
``tune-shot.html``, ``tune-1400.png`` and ``tune-390.png``. Each PNG is the whole page:
the window is as tall as the page. Headless Chromium lays pages out at least 500 px wide,
so the phone width is shown in an iframe of 390 px.

    python -m benchmarks.report_shot [--output data/outputs]

Needs Debian's chromium (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
INSTALL_HINT = "install it with `apt-get update -qq && apt-get install -y -qq chromium`"

MIN_WINDOW = 500
"""Headless Chromium lays a page out at least this wide, whatever --window-size says:
narrower widths are shown in an iframe of that width (a phone's viewport)."""

# Written into a copy of the page (never into the product): the page's layout after load,
# as the title of the page (and of the frame's parent, for narrow widths).
LAYOUT_PROBE = """<script>
window.addEventListener("load", function () {
  var root = document.documentElement, boxes = document.querySelectorAll(".wide"), clipped = [];
  boxes.forEach(function (box, i) {
    var table = box.querySelector("table");
    if (table && table.offsetWidth > box.clientWidth) clipped.push(i);
  });
  var images = Array.prototype.filter.call(document.images, function (img) {
    return img.getBoundingClientRect().right > window.innerWidth + 1;
  }).length;
  var title = "LAYOUT " + JSON.stringify({
    innerWidth: window.innerWidth, scrollWidth: root.scrollWidth, scrollHeight: root.scrollHeight,
    tables: boxes.length, clipped: clipped, imagesOutside: images
  });
  document.title = title;
  if (window.parent !== window) window.parent.postMessage(title, "*");
});
</script>"""
FRAME = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>frame</title>
<style>html, body {{ margin: 0; padding: 0; overflow: hidden; }}
iframe {{ border: 0; display: block; }}</style>
<script>window.addEventListener("message", function (e) {{ document.title = e.data; }});</script>
</head><body><iframe width="{width}" height="{height}" srcdoc="{page}"></iframe></body></html>"""


def chromium() -> str:
    """The Chromium executable, or a RuntimeError saying how to install it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(f"chromium is not installed: {INSTALL_HINT}")


def _chromium(page_html: str, width: int, height: int, *args: str, timeout: float = 120) -> str:
    """Chromium's stdout for a page shown in a window ``width`` x ``height`` (in an
    iframe of that size when narrower than Chromium's smallest window)."""
    if width < MIN_WINDOW:
        page_html = FRAME.format(width=width, height=height, page=html.escape(page_html, quote=True))
    with tempfile.TemporaryDirectory(prefix="recsys-chromium-") as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(page_html)
        command = [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=5000",
            *args,
            page.as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def layout(page_html: str, width: int, height: int = 2000) -> dict[str, Any]:
    """The page's layout in a window ``width`` px wide: ``innerWidth``, ``scrollWidth``
    and ``scrollHeight`` of the page, how many table boxes there are, which of them
    scroll (``clipped``: the table is wider than its box) and how many images reach past
    the window."""
    probed = page_html.replace("</body>", LAYOUT_PROBE + "</body>", 1)
    dom = _chromium(probed, width, height, "--dump-dom")
    found = re.search(r"<title>LAYOUT (.*?)</title>", dom, re.S)
    if not found:
        raise RuntimeError("the layout probe did not run: no LAYOUT title in the dumped page")
    return json.loads(html.unescape(found.group(1)))


def screenshot(page_html: str, png: Path, width: int, height: int | None = None) -> Path:
    """A PNG of the page in a window ``width`` px wide; ``height`` None: the whole page."""
    if height is None:
        height = min(max(layout(page_html, width)["scrollHeight"], 400), 16000)
    png = png.resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    _chromium(page_html, width, height, f"--screenshot={png}")
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {png}")
    return png


def demo_report(root: Path) -> str:
    """Two small published runs under ``root``; the second run's report, with the first
    as the previous run."""
    import recsys
    from recsys.data import generate_interactions
    from recsys.reporting import previous_manifest, render_report

    frame = generate_interactions(n_users=1500, n_items=600, n_clusters=10, seed=7)
    config: dict[str, Any] = {
        "models": [
            {"name": "als", "type": "als", "params": {"factors": 4, "iterations": 2}},
            {"name": "popular", "type": "popular"},
        ],
        "index": {"n_trees": 10},
        "recommend": {"top_n": 20},
        "similar_items": {"top_n": 10},
        "evaluate": {"k": [10, 20], "split": {"method": "random"}, "sample_users": 300, "sample_items": 300},
    }
    recsys.run_pipeline(frame, config, output=root)
    config["models"][0]["params"] = {"factors": 16, "iterations": 10, "regularization": 0.05}
    run = recsys.run_pipeline(frame, config, output=root)
    return render_report(run.dir, run.manifest, previous_manifest(root, run.run_id))


def demo_tuning_report() -> str:
    """The report of a short search of ALS's params on synthetic interactions."""
    from recsys.config import parse_config
    from recsys.data import generate_interactions
    from recsys.data.interactions import clean_table, interactions_from_table
    from recsys.data.splits import map_holdout
    from recsys.tuning import carve_validation, report_html, tune

    config = parse_config(
        {
            "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 8}}],
            "recommend": {"top_n": 10},
            "evaluate": {"k": [5, 10]},
        }
    )
    table = clean_table(generate_interactions(n_users=400, n_items=150, n_clusters=6, seed=6))
    rows, held_out, split = carve_validation(config, table)
    interactions = interactions_from_table(rows)
    validation, stats = map_holdout(interactions, held_out)
    split.update(training_interactions=interactions.nnz, **stats)
    result = tune(config, "als", interactions.user_items, validation, trials=12, split=split)
    return report_html(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("data/outputs"))
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recsys-report-shot-") as tmp:
        pages = {"report": demo_report(Path(tmp) / "out"), "tune": demo_tuning_report()}
    for name, text in pages.items():
        page = args.output / f"{name}-shot.html"
        page.write_text(text)
        for width in (1400, 390):
            png = screenshot(text, args.output / f"{name}-{width}.png", width)
            facts = layout(text, width)
            print(
                f"{png}: page {facts['scrollWidth']} px wide in a {facts['innerWidth']} px window, "
                f"{facts['scrollHeight']} px tall; {len(facts['clipped'])} of {facts['tables']} tables scroll"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""report.html as a person sees it: rendered by headless Chromium at a desktop width
(1400 px) and a phone width (390 px). The layout is read by a probe script added to a
copy of the page (never to the published report). They need Chromium (Debian:
``apt-get install chromium``): without it they are skipped with that reason on a
developer's machine, and fail in CI (``CI`` set), where ``.ci/run`` installs it."""

from __future__ import annotations

import os
import shutil

import matplotlib.image
import numpy as np
import pytest

from recsys.data import generate_interactions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The report of a small run with an als and a popular model and a random split."""
    if not any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")):
        reason = (
            "chromium is not installed, so the report cannot be rendered: install it with "
            "`apt-get update -qq && apt-get install -y -qq chromium`"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    import recsys
    from recsys.reporting import render_report

    frame = generate_interactions(n_users=300, n_items=150, n_clusters=5, seed=4)
    config = {
        "models": [
            {
                "name": "als",
                "type": "als",
                "params": {"factors": 16, "iterations": 5, "regularization": 0.05},
            },
            {"name": "popular", "type": "popular"},
        ],
        "index": {"n_trees": 5},
        "recommend": {"top_n": 20},
        "similar_items": {"top_n": 10},
        "evaluate": {"k": [10, 20], "split": {"method": "random"}, "sample_users": 100, "sample_items": 100},
    }
    run = recsys.run_pipeline(frame, config, output=tmp_path_factory.mktemp("shots") / "out")
    return render_report(run.dir, run.manifest)


def _pixels(png) -> np.ndarray:
    return np.asarray(matplotlib.image.imread(png), dtype=np.float64)


@pytest.mark.parametrize("width", [1400, 390])
def test_the_page_renders(page, tmp_path, width):
    from benchmarks.report_shot import screenshot

    png = screenshot(page, tmp_path / f"report-{width}.png", width)
    pixels = _pixels(png)
    assert pixels.shape[1] == width and pixels.shape[0] > 1000  # the whole page, taller than a screen
    assert pixels.std() > 0.05, "the screenshot is blank"
    # the top of the page holds text (the title and the summary), not just background
    assert pixels[:400].std() > 0.05


def test_no_table_is_clipped_at_desktop_width(page):
    from benchmarks.report_shot import layout

    facts = layout(page, 1400)
    assert facts["innerWidth"] == 1400
    assert facts["tables"] >= 8
    assert facts["scrollWidth"] <= facts["innerWidth"], facts
    assert facts["clipped"] == [], f"tables wider than their box at 1400 px: {facts}"
    assert facts["imagesOutside"] == 0, facts


def test_the_page_fits_a_phone_and_tables_scroll_in_their_box(page):
    from benchmarks.report_shot import layout

    facts = layout(page, 390)
    assert facts["innerWidth"] == 390
    assert facts["scrollWidth"] <= facts["innerWidth"], f"the page scrolls sideways on a phone: {facts}"
    assert facts["clipped"], "at 390 px the wide tables should scroll inside their own box"
    assert facts["imagesOutside"] == 0, facts

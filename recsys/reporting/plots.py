"""Matplotlib figures as PNG images embedded in a page (data URIs), and a row of them."""

from __future__ import annotations

import base64
import io

from matplotlib.figure import Figure

from recsys.reporting.html import esc

SINGLE = {"left": 0.12, "right": 0.97, "bottom": 0.12, "top": 0.92}
"""Margins of a one-axes figure (6 x 4.2 in): fixed, since measuring every label's extent
(``tight_layout``) costs more than drawing the figure."""


def png(figure: Figure, alt: str, margins: dict[str, float] = SINGLE) -> str:
    buffer = io.BytesIO()
    figure.subplots_adjust(**margins)
    figure.savefig(buffer, format="png", dpi=100)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def gallery(images: list[str | None]) -> str:
    shown = [i for i in images if i]
    return '<div class="plots">' + "".join(shown) + "</div>" if shown else ""

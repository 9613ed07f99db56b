"""Matplotlib figures as PNG images embedded in a page (data URIs), and a row of them.
Matplotlib is imported when the first figure is made, not with the reports."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

from recsys.reporting.html import esc

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SINGLE = {"left": 0.12, "right": 0.97, "bottom": 0.12, "top": 0.92}
"""Margins of a one-axes figure (6 x 4.2 in): fixed, since measuring every label's extent
(``tight_layout``) costs more than drawing the figure."""


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches, drawn by :func:`png`."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def png(figure: Figure, alt: str, margins: dict[str, float] | None = SINGLE) -> str:
    """The figure as an ``<img>`` with its PNG inline, 100 dpi. ``margins``: the
    subplots' (fractions of the figure); None: fitted to the labels (``tight_layout``)."""
    buffer = io.BytesIO()
    if margins is None:
        figure.tight_layout()
    else:
        figure.subplots_adjust(**margins)
    figure.savefig(buffer, format="png", dpi=100)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def gallery(images: list[str | None]) -> str:
    """The images side by side, wrapping as the window narrows ("" if there are none)."""
    shown = [i for i in images if i]
    return '<div class="plots">' + "".join(shown) + "</div>" if shown else ""

"""recsys: batch recommendations from an interactions table.

The library is pure: it never imports Prefect. ``flows/`` orchestrates it and
``recsys.cli`` is the command-line front door.
"""

__version__ = "0.1.0"

"""The web dashboard of ``multiagent metrics serve``: overview, live runs, threads, backpressure.

Static files (the page, its script and style, and uPlot 1.6.32 with its MIT licence) ship in
``static/``; nothing is loaded from the internet and there is no JavaScript build step.
"""

from __future__ import annotations

__all__ = ["mount_dashboard"]

from multiagent.dashboard.app import mount_dashboard

"""Debian's Chromium, headless, as the dashboard's browser tests, its benchmark and its screenshot drive it.

Playwright's own browser download (``playwright install``) is never used: the browser is ``/usr/bin/chromium``
(scripts/setup.sh installs the package). The flags keep it off the network: without the background-networking ones
it tries Google's hosts at every start, which this machine's closed network refuses.
"""

from __future__ import annotations

from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright: Any) -> Any:
    """A headless Chromium from ``playwright`` (a ``sync_playwright()`` context)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)

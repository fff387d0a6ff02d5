"""Headless Chromium for the report's browser test, installed by scripts/chromium.sh (Debian's package).

Without root and apt (and no browser installed) the test is skipped, with the reason; where
FLOWSPEC_REQUIRE_BROWSER=1 (as CI should set it) a browser that cannot be installed is an error instead.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import unavailable

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "chromium.sh"


def _unavailable(reason: str):
    unavailable("FLOWSPEC_REQUIRE_BROWSER", "headless Chromium", reason, "scripts/chromium.sh install needs root and apt")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser's path; installs it first if needed and possible."""
    found = subprocess.run(["bash", str(SCRIPT), "path"], capture_output=True, text=True)
    if found.returncode == 0:
        return found.stdout.strip()
    if shutil.which("apt-get") is None:
        _unavailable("no chromium on PATH and no apt-get to install it")
    if os.geteuid() != 0:
        _unavailable("no chromium on PATH and not running as root")
    installed = subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True, text=True, timeout=900)
    if installed.returncode != 0:
        _unavailable(f"scripts/chromium.sh install failed: {installed.stderr[-2000:]}")
    return subprocess.run(["bash", str(SCRIPT), "path"], capture_output=True, text=True, check=True).stdout.strip()

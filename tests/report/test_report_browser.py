"""The reports in a real browser (headless Chromium): every image loads and the page logs no error, for a
run's page, a sweep's page and the run pages it links."""
import pytest

from flowspec.runtime.report.html import write_report

from .browser import Browser
from .runs import make_run, make_sweep

pytestmark = pytest.mark.slow  # starts a browser: a few seconds


@pytest.fixture
def browser(chromium, tmp_path):
    opened = Browser(chromium, tmp_path / "profile")
    yield opened
    opened.close()


def check(view, count: int) -> None:
    assert len(view.images) == count
    broken = [i for i in view.images if not (i["complete"] and i["width"] > 0)]
    assert not broken, broken
    assert not view.console_errors, view.console_errors


def test_run_report_in_a_browser(browser, tmp_path):
    page = write_report(make_run(tmp_path))
    check(browser.open(page), 1 + 3 * (1 + 2 + 1) + 1)


def test_sweep_report_and_its_run_pages_in_a_browser(browser, tmp_path):
    page = write_report(make_sweep(tmp_path))
    check(browser.open(page), 3)
    for name in ("toy-lr1", "toy-lr2"):
        check(browser.open(tmp_path / name / "report.html"), 1 + 3 * (1 + 2 + 1))


def test_the_check_sees_a_broken_image_and_a_console_error(browser, tmp_path):
    """The browser check itself: a page with a missing image and a script error fails both of its tests."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><img src="nothing.png" alt="x"><script>console.error("boom")</script></body></html>')
    view = browser.open(page)
    assert view.images == [{"alt": "x", "complete": True, "width": 0}]
    assert any("boom" in e for e in view.console_errors)
    assert any("ERR_FILE_NOT_FOUND" in e for e in view.console_errors)

"""The static site of the committed series (python -m capslib.site), opened from the file system in
headless Chromium with every request that is not a file of the site blocked and recorded.

- every page loads with no console error, and no request leaves the site;
- on notebook 03's page, moving a precomputed slider (a scrubber) changes the picture shown.

The screenshot of that scrubber is the README's (``bash scripts/readme_screenshots.sh`` copies it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from capslib.publish.site import build_site

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    build_site(out, notebooks=REPO / "notebooks", progress=False)
    return out


class Watched:
    """A browser context whose requests outside ``root`` are blocked and kept, with a page's errors."""

    def __init__(self, browser, root: Path):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.root, self.outside, self.errors = root.as_uri(), [], []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith(self.root + "/"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def open(self, path: Path) -> None:
        self.page.goto(path.as_uri(), wait_until="load")


def test_every_page_loads_from_disk_with_no_error_and_no_request_outside_the_site(site, browser):
    watched = Watched(browser, site)
    try:
        size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
        assert size < 50e6, f"the site takes {size / 1e6:.1f} MB; keep it under about 50 MB"
        pages = sorted(site.rglob("*.html"))
        assert len(pages) >= 23, pages  # index + 11 notebooks + 11 solutions (+ docs)
        for page in pages:
            watched.open(page)
            assert watched.page.title(), page
        # The index links every notebook of the series.
        watched.open(site / "index.html")
        hrefs = watched.page.eval_on_selector_all("table a", "links => links.map(a => a.getAttribute('href'))")
        notebooks = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
        assert all(f"{name}.html" in hrefs for name in notebooks), hrefs
    finally:
        watched.context.close()
    assert not watched.outside, f"requests left the site: {watched.outside}"
    assert not watched.errors, watched.errors


def test_a_scrubber_on_notebook_03s_page_changes_the_picture(site, browser, screenshot_dir):
    watched = Watched(browser, site)
    try:
        watched.open(site / "03_dynamic_routing.html")
        scrubbers = watched.page.locator(".capslib-scrubber")
        assert scrubbers.count() >= 3, "notebook 03 should carry its precomputed sliders"
        scrubber = scrubbers.first
        scrubber.scroll_into_view_if_needed()
        slider = scrubber.locator("input[type=range]").first
        assert slider.is_enabled(), "the page's script enables the slider"
        picture = scrubber.locator("img").first  # the frame shown (every frame is folded away below it)
        before, label_before = (
            picture.get_attribute("src"),
            scrubber.locator(".capslib-scrubber-value").first.inner_text(),
        )
        other = "0" if slider.input_value() == slider.get_attribute("max") else slider.get_attribute("max")
        slider.fill(other)  # dispatches "input", as a drag does
        after, label_after = (
            picture.get_attribute("src"),
            scrubber.locator(".capslib-scrubber-value").first.inner_text(),
        )
        assert after != before and label_after != label_before
        assert picture.evaluate("img => img.complete && img.naturalWidth > 0")
        assert not scrubber.locator("details").is_visible(), "with the slider working, the fold of frames is hidden"
        scrubber.screenshot(path=str(screenshot_dir / "site_scrubber.png"), animations="disabled")
    finally:
        watched.context.close()
    assert not watched.outside, watched.outside
    assert not watched.errors, watched.errors

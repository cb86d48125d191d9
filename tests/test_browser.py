"""The Space as a person meets it: Debian's Chromium driven by Playwright against the running app.

Needs /usr/bin/chromium (`apt-get install chromium`; `.ci/run` installs it). Without it these tests
skip, unless CXR_REQUIRE_BROWSER=1 (set in CI) makes that a failure. Set CXR_SCREENSHOT=DIR to keep
the screenshots of what they saw there (README's pictures come from here: `docs/`): a dropped
full-size X-ray analysed (screenshot.png), an example clicked (screenshot_example.png) and a picture
that is not an X-ray (screenshot_not_assessed.png).
"""

from __future__ import annotations

import base64
import mimetypes
import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.conftest import EXAMPLES, true_class

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking switches Chromium keeps dialling Google on this closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000  # a first analysis on a busy 2-core machine
# The headline's decision and probability ("Decision: NORMAL\nP(pneumonia) = 0.084"); valid in Python and JavaScript.
DECISION_LINE = r"Decision: \w+\s+P\(pneumonia\) = [0-9.]+"

pytestmark = pytest.mark.slow  # starts processes (the app, train.py or a command)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found: apt-get install chromium"
        if os.environ.get("CXR_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.wait_for_selector("#xray button.upload-container")
    yield page
    page.close()


def drop_file(page, path: Path, name: str | None = None) -> None:
    """A real drop event on the image box, its DataTransfer carrying the file's bytes."""
    name = name or path.name
    transfer = page.evaluate_handle(
        """([data, name, type]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type }));
            return transfer;
        }""",
        [base64.b64encode(path.read_bytes()).decode(), name, mimetypes.guess_type(name)[0] or ""],
    )
    target = page.locator("#xray button.upload-container")
    for event in ("dragenter", "dragover", "drop"):
        target.dispatch_event(event, {"dataTransfer": transfer})


def analyze(page) -> tuple[str, float]:
    """Click Analyze and wait for the answer: (decision shown, P(pneumonia) shown in %)."""
    page.click("#analyze")
    return shown_answer(page)


def shown_answer(page, previous: str = "") -> tuple[str, float]:
    """Wait for a decision and its map, other than the ``previous`` one; (decision, P(pneumonia)).

    Only the decision and its probability are compared: while a step runs, Gradio's status text ("processing | 0.1s")
    sits inside the component, so a whole-text comparison can pass on the previous answer's words.
    """
    page.wait_for_function(
        "([previous, pattern]) => { const t = document.querySelector('#decision')?.innerText || '';"
        " const line = (t.match(new RegExp(pattern)) || [''])[0];"
        " return line !== '' && line !== previous && !/processing/.test(t); }",
        arg=[previous, DECISION_LINE],
    )
    page.locator("#overlay img").wait_for()
    text = page.inner_text("#decision")
    label = re.search(r"Decision: (NORMAL|PNEUMONIA)", text).group(1)
    probability = float(re.search(r"P\(pneumonia\) = ([0-9.]+)", text).group(1))
    return label, probability


def decision_line(page) -> str:
    """The headline's decision and probability ("Decision: NORMAL\nP(pneumonia) = 0.084"), as shown_answer
    compares them."""
    match = re.search(DECISION_LINE, page.inner_text("#decision"))
    return match.group(0) if match else ""


def test_drag_and_drop_a_full_size_xray(page, originals_dir, tmp_path):
    original = sorted(originals_dir.glob("PNEUMONIA/*"))[0]
    drop_file(page, original)
    page.locator("#xray img").wait_for()  # the upload's preview
    label, probability = analyze(page)
    assert label == "PNEUMONIA" and probability >= 0.5
    assert "PNEUMONIA" in page.inner_text("#probability")
    overlay = page.locator("#overlay img")
    assert overlay.evaluate("img => img.complete && img.naturalWidth") > 0  # loaded, not a broken icon
    assert keep_screenshot(page, tmp_path, "screenshot.png").stat().st_size > 50_000


def keep_screenshot(page, tmp_path: Path, name: str) -> Path:
    """The whole page as a PNG in ``tmp_path``, also copied into $CXR_SCREENSHOT (a folder) when set."""
    screenshot = tmp_path / name
    page.screenshot(path=str(screenshot), full_page=True)
    if os.environ.get("CXR_SCREENSHOT"):
        shutil.copy(screenshot, Path(os.environ["CXR_SCREENSHOT"]) / name)
    return screenshot


def test_every_example_is_captioned_and_a_click_shows_its_result(page, tmp_path):
    """One click on an example answers (no Analyze), its caption names its class, and the map's
    caption names the decision it explains."""
    examples = page.locator("#examples button.gallery-item")
    # The gallery renders after the image box the fixture waited for: wait for it (count() would not).
    expect(examples).to_have_count(len(EXAMPLES), timeout=TIMEOUT_MS)
    previous = ""
    for index, example in enumerate(EXAMPLES):
        caption = examples.nth(index).inner_text()
        assert true_class(example).lower() in caption.lower() and "Kermany" in caption, caption
        examples.nth(index).click()
        page.locator(f'#xray img[src*="{example.name}"]').wait_for()  # this example is the input now
        label, _ = shown_answer(page, previous)
        previous = decision_line(page)
        assert label == true_class(example), example.name
        # The probability box is headed by the decision, never by a class the decision contradicts.
        lines = [line.strip() for line in page.inner_text("#probability").splitlines() if line.strip()]
        assert lines[lines.index("Screening decision") + 1] == label, (example.name, lines)
        page.locator("#overlay").get_by_text(f"regions that pushed the model towards {label}").wait_for()
        if index == 0:
            keep_screenshot(page, tmp_path, "screenshot_example.png")


def test_a_picture_that_is_not_a_chest_xray_gets_no_decision_and_no_map(page, not_xrays, tmp_path):
    """The headline says no decision is given and why; no map; the reading guide starts collapsed."""
    guide = page.locator("#how-to-read")
    assert not guide.get_by_text("Grad-CAM** colours").count() and not guide.get_by_text("coarse 7 x 7").is_visible()
    drop_file(page, not_xrays["document"])
    page.locator("#xray img").wait_for()
    page.click("#analyze")
    page.locator("#decision").get_by_text("No screening decision").wait_for()
    assert "pediatric chest X-ray population" in page.inner_text("#decision")
    assert "NOT_ASSESSED" in page.inner_text("#probability")
    expect(page.locator("#probability.not-assessed")).to_have_count(1)  # the bars are de-emphasised
    assert page.locator("#overlay img").count() == 0
    page.locator("#overlay").get_by_text("not drawn").wait_for()
    keep_screenshot(page, tmp_path, "screenshot_not_assessed.png")
    guide.get_by_text("How to read this").click()
    guide.get_by_text("coarse 7 x 7").wait_for()


def test_a_file_that_is_not_an_image_shows_the_error_and_the_page_still_works(page, tmp_path):
    fake = tmp_path / "scan.jpg"
    fake.write_text("just some text, not an X-ray\n" * 20)
    drop_file(page, fake)
    page.click("#analyze")
    toast = page.get_by_text("not an image that can be read")
    toast.first.wait_for()
    assert not page.locator("#decision").filter(has_text="Decision:").count()
    drop_file(page, EXAMPLES[-1])  # the same page answers the next upload
    page.locator("#xray img").wait_for()
    label, _ = analyze(page)
    assert label == true_class(EXAMPLES[-1])


def test_a_new_upload_clears_the_previous_answer_and_gets_its_own(page, originals_dir):
    """Dropping another X-ray removes the answer standing beside the old one at once (in the browser), and
    Analyze clicked straight after the drop gets the new answer, which nothing clears afterwards."""
    drop_file(page, EXAMPLES[0])
    page.locator("#xray img").wait_for()
    first = analyze(page)
    original = sorted(originals_dir.glob("PNEUMONIA/*"))[0]
    drop_file(page, original)
    page.wait_for_function("() => !(document.querySelector('#decision')?.innerText || '').includes('Decision:')")
    page.locator(f'#xray img[src*="{original.suffix}"]').wait_for()
    label, probability = analyze(page)
    assert (label, probability) != first and label == "PNEUMONIA"
    page.wait_for_timeout(1000)  # a late clear would have landed by now
    assert f"Decision: {label}" in page.inner_text("#decision") and page.locator("#overlay img").count() == 1

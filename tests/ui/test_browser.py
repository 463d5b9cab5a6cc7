"""`lmforge ui` in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium; no browser
is downloaded): every tab end to end, as a user clicks through it.

The app is served in-process on a free port with a fresh runs folder; the tiny Llama, a data file and a safe and
an unsafe checkpoint come from tests/ui/conftest.py. Training is the real `lmforge train`, started by the page in
the background. Screenshots go to a temporary folder, or to $LMFORGE_UI_SCREENSHOTS (docs/img/ui for the docs).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Flags known to work in containers and CI: no sandbox (root), no GPU, nothing fetched in the background.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (make test installs them)",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ui_root: Path) -> Iterator[tuple[str, Path]]:
    """The UI on 127.0.0.1 (a free port), runs in a fresh folder, the shared test root allowed."""
    from lmforge.ui import jobs
    from lmforge.ui.app import serve

    runs = tmp_path_factory.mktemp("browser") / "runs"
    port = _free_port()
    app = serve(port=port, runs=str(runs), allow=[str(ui_root)], block=False)
    yield f"http://127.0.0.1:{port}/", runs
    app.close()
    for run in runs.iterdir():  # a run a failed test left training
        if jobs.run_state(run).state == "running":
            jobs.stop(run)


def _chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS + (f"--user-data-dir={tempfile.mkdtemp(prefix='lmforge-chromium-')}",):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = _chromium()
    yield driver
    driver.quit()


def wait_for(condition: Callable[[], Any], seconds: float, what: str, shown: Callable[[], str] | None = None) -> Any:
    """Poll until `condition()` is truthy (returning it); fail naming `what` after `seconds` (and what `shown`
    reads off the page then, so a failure says what the user saw)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = condition()
        except Exception:  # an element being re-rendered: try again
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f"; the page shows: {shown()!r}" if shown is not None else ""
            raise AssertionError(f"timed out after {seconds} s waiting for {what}{seen}")
        time.sleep(0.5)


class Page:
    """The few gestures the tests need, on gradio's components found by their elem_id."""

    def __init__(self, driver: Any, url: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver, self.by = driver, By
        driver.get(url)
        wait_for(lambda: self.text("plan-verdict"), 60, "the page to load and plan")

    def element(self, elem_id: str, css: str = "") -> Any:
        """The component with `elem_id`, or the first of its descendants matching `css` (comma-separated)."""
        selector = ", ".join(f"#{elem_id} {part.strip()}" for part in css.split(",")) if css else f"#{elem_id}"
        element = self.driver.find_element(self.by.CSS_SELECTOR, selector)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        return element

    def text(self, elem_id: str) -> str:
        return self.driver.find_element(self.by.ID, elem_id).text

    def tab(self, name: str) -> None:
        self.element(f"tab-{name}-button").click()

    def click(self, elem_id: str, css: str = "") -> None:
        self.element(elem_id, css).click()

    def type(self, elem_id: str, value: Any) -> None:
        """Replace the value of a textbox or number field, then leave it (which fires its change)."""
        from selenium.webdriver.common.keys import Keys

        field = self.element(elem_id, "input, textarea")
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(str(value))
        self.driver.execute_script("arguments[0].blur()", field)

    def choose(self, elem_id: str, value: str) -> None:
        """Type into a dropdown, then click the option that matches (or confirm a custom value with Enter)."""
        from selenium.webdriver.common.keys import Keys

        field = self.element(elem_id, "input")
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(value)
        option = f"[data-testid='dropdown-option'][aria-label='{value}']"
        try:
            wait_for(lambda: self.driver.find_elements(self.by.CSS_SELECTOR, option), 3, f"option {value}")
            self.driver.find_element(self.by.CSS_SELECTOR, option).click()
        except AssertionError:  # not one of the options: a value the dropdown accepts as typed
            field.send_keys(Keys.ENTER)
        self.driver.execute_script("arguments[0].blur()", field)
        wait_for(lambda: field.get_attribute("value") == value, 10, f"{elem_id} to read {value}")

    def line_points(self, elem_id: str) -> list[int]:
        """Points of each line drawn in a gradio line plot (its SVG paths' move/line commands)."""
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll(`#${arguments[0]} path[aria-roledescription='line mark']`))"
            ".map(p => ((p.getAttribute('d') || '').match(/[ML]/g) || []).length);",
            elem_id,
        )

    def shot(self, name: str, elem_id: str | None = None) -> None:
        """A small PNG (a 64-colour palette) of the page or one component, for docs/ui.md."""
        from PIL import Image

        folder = Path(os.environ.get("LMFORGE_UI_SCREENSHOTS") or tempfile.mkdtemp(prefix="lmforge-ui-shots-"))
        folder.mkdir(parents=True, exist_ok=True)
        raw = folder / f".{name}.raw.png"
        if elem_id:
            self.element(elem_id).screenshot(str(raw))
        else:
            self.driver.execute_script("window.scrollTo(0, 0)")
            self.driver.save_screenshot(str(raw))
        with Image.open(raw) as image:
            image.convert("RGB").quantize(colors=64).save(folder / f"{name}.png", optimize=True)
        raw.unlink()


# Records every text the chat's status line shows (a streamed reply says "generating…" while it grows), so a test
# sees the intermediate states however briefly they were on screen.
STATUS_RECORDER = """
window.lmfStatuses = [];
const status = document.getElementById('chat-status');
new MutationObserver(() => window.lmfStatuses.push(status.innerText))
    .observe(status, {childList: true, subtree: true, characterData: true});
"""


def _step(status: str) -> int:
    found = re.search(r"step (\d+)", status)
    return int(found.group(1)) if found else -1


def test_plan_llama_8b_lora_on_an_rtx_4090(server, browser):
    from lmforge.plan import plan_training

    page = Page(browser, server[0])
    page.choose("plan-gpu", "a100-80g")  # change away and back: the verdict follows the inputs
    wait_for(lambda: "A100" in page.text("plan-verdict"), 30, "the A100 plan")
    page.choose("plan-gpu", "rtx-4090")
    verdict = wait_for(lambda: "RTX 4090" in (text := page.text("plan-verdict")) and text, 30, "the RTX 4090 plan")
    plan = plan_training("llama-3.1-8b", method="lora", recompute="full", gpu="rtx-4090")
    expected = "FITS" if plan.fits else "DOES NOT FIT"
    assert verdict.startswith(f"{expected}: {plan.layout.gpus} × NVIDIA GeForce RTX 4090 (24 GiB)")
    assert "llama-3.1-8b (LlamaForCausalLM): 8.03B parameters, 21M trainable" in verdict  # LoRA rank 8 (method.lora_r)
    assert "rtx-4090" in page.text("plan-verdicts") and "GPU-hours" in page.text("plan-cost")
    page.shot("plan")


def test_preview_built_in_data_with_the_masked_part_dimmed(server, browser, ui_root):
    page = Page(browser, server[0])
    page.tab("data")
    page.choose("data-source", "builtin:arith-sft")
    page.choose("data-tokenizer", str(ui_root / "models" / "tiny"))
    page.type("data-max-len", 32)
    page.click("data-load")
    preview = wait_for(lambda: "record 1 ·" in (text := page.text("data-preview")) and text, 120, "the preview")
    assert "<|im_start|>assistant" in preview
    summary = page.text("data-summary")
    assert "builtin:arith-sft: messages → chat" in summary and "2000 records, none rejected" in summary
    assert re.search(r"over max_len 32: [1-9]\d* records \(\d+\.\d%\) would be truncated", summary)
    masked = browser.execute_script("return document.querySelectorAll('#data-preview .lmf-masked').length")
    assert masked >= 3  # at least each record's prompt is dimmed
    page.shot("data")
    page.shot("data-preview", "data-preview")


def test_inspect_and_scan_a_safe_and_an_unsafe_file(server, browser, ui_root):
    page = Page(browser, server[0])
    page.tab("files")
    page.choose("files-path", str(ui_root / "files" / "weights.bin"))
    page.click("files-inspect")
    wait_for(lambda: "inspect: safety SAFE" in page.text("files-verdict"), 60, "the inspect verdict")
    assert "2 tensors, 16 parameters" in page.text("files-details")
    page.click("files-scan")
    wait_for(lambda: "scan: SAFE: every file is proven safe to load" in page.text("files-verdict"), 60, "the scan")
    # An upload is scanned the moment it arrives; the payload inside must never run.
    page.element("files-upload", "input[type=file]").send_keys(str(ui_root / "files" / "evil.pkl"))
    wait_for(lambda: "scan: UNSAFE" in page.text("files-verdict"), 60, "the upload's scan")
    assert "evil.pkl pickle UNSAFE posix.system" in page.text("files-details")
    assert "dangerous-global" in page.text("files-table")
    assert not (ui_root / "files" / "CANARY").exists()
    page.shot("files")


def test_train_watch_stop_resume_survive_the_browser_then_chat(server, ui_root):
    url, runs = server
    driver = _chromium()
    try:
        page = Page(driver, url)
        page.tab("train")
        page.type("train-name", "sft-ui")
        page.choose("train-model-path", str(ui_root / "models" / "tiny"))
        page.type("train-data-max_len", 64)
        page.type("train-train-max_steps", 5000)  # stopped long before: the test drives it
        page.type("train-train-micro_batch_size", 2)
        page.type("train-train-save_every", 2)
        page.click("train-launch")
        wait_for(lambda: "launched sft-ui" in page.text("train-message"), 60, "the launch")
        # The loss curve gains points while it trains, and a checkpoint appears.
        wait_for(lambda: (page.line_points("train-curves") or [0])[0] >= 3, 240, "three points on the loss curve")
        first = page.line_points("train-curves")[0]
        wait_for(lambda: (page.line_points("train-curves") or [0])[0] > first, 120, "the curve to gain points")
        wait_for(lambda: re.search(r"[1-9]\d* checkpoint", page.text("train-status")), 120, "a checkpoint")
        page.shot("train")
        page.click("train-stop")
        wait_for(lambda: "stopped by the user" in page.text("train-status"), 60, "the stopped state")
        stopped_at = _step(page.text("train-status"))
        page.click("train-resume")
        # The click waits in gradio's queue behind the live view's refreshes: on a loaded 2-core CI box that can
        # take a while (a 60 s wait timed out once in a full-suite run).
        wait_for(
            lambda: "resumed" in page.text("train-action"),
            180,
            "the resume",
            shown=lambda: page.text("train-action") + " | " + page.text("train-status"),
        )
        wait_for(
            lambda: "RUNNING" in page.text("train-status") and _step(page.text("train-status")) > stopped_at,
            240,
            "training to continue past the step it was stopped at",
        )
    finally:
        driver.quit()  # the browser goes away mid-run ...
    run_dir = runs / "sft-ui"
    from lmforge.ui import jobs

    assert jobs.run_state(run_dir).state == "running"
    step_without_browser = jobs.progress(run_dir).step
    driver = _chromium()
    try:
        page = Page(driver, url)  # ... and a new one finds the run still training
        page.tab("train")
        page.choose("train-run", str(run_dir))
        wait_for(
            lambda: "RUNNING" in page.text("train-status") and _step(page.text("train-status")) > step_without_browser,
            240,
            "the run to train on unwatched",
        )
        page.click("train-stop")
        wait_for(lambda: "stopped by the user" in page.text("train-status"), 60, "the second stop")
        # Runs: listed with its state; its details.
        page.tab("runs")
        page.click("runs-refresh")
        wait_for(lambda: re.search(r"sft-ui\s+sft\s+lora\s+stopped", page.text("runs-table")), 60, "the run listed")
        page.choose("runs-run", str(run_dir))
        wait_for(lambda: "sft-ui: stopped by the user" in page.text("runs-summary"), 60, "the run's details")
        page.shot("runs")
        # Evaluate the run's model with its base model beside it.
        page.tab("evaluate")
        page.choose("eval-model", str(run_dir))
        page.type("eval-limit", 2)
        page.type("eval-max-new-tokens", 4)
        page.click("eval-run")
        summary = wait_for(lambda: "examples" in (text := page.text("eval-summary")) and text, 240, "the evaluation")
        assert re.match(r"generation on\s+builtin:arith-sft\s*: 2 examples", summary)
        assert "tiny+sft-ui/checkpoint-" in summary and "per example (rougeL)" in summary and "against tiny" in summary
        page.shot("evaluate")
        # Chat with the result (its newest checkpoint: an adapter on the tiny Llama), streamed, with --explain.
        page.tab("chat")
        page.choose("chat-model", str(run_dir))
        page.click("chat-explain", "input")
        page.type("chat-message", "What is 2 plus 3?")
        driver.execute_script(STATUS_RECORDER)
        page.click("chat-send")
        status = wait_for(lambda: "tokens in" in (text := page.text("chat-status")) and text, 120, "the reply")
        assert "tiny+sft-ui/checkpoint-" in status
        reply = driver.execute_script(
            "return Array.from(document.querySelectorAll('#chat-tokens .lmf-token'), t => t.textContent).join('')"
        )

        def shown_reply() -> str:
            bot = driver.find_elements(page.by.CSS_SELECTOR, "#chat-history [data-testid='bot']")
            return bot[-1].text.strip() if bot else ""

        # The chat shows the reply the tokens spell. Which checkpoint answers depends on where training was
        # stopped: a tiny model's checkpoint can end its turn at once (its one token <|im_end|>, not shown), and
        # then the status says the reply is empty.
        if shown_reply() == "" and "empty reply" in status:
            assert not reply.replace("<|im_end|>", "").strip(), reply
        else:
            wait_for(shown_reply, 30, "the reply in the chat history", shown=lambda: repr(reply))
        # Streamed: the page showed the reply while it was still being generated, before the final figures.
        assert any("generating" in text for text in driver.execute_script("return window.lmfStatuses"))
        tokens = driver.execute_script("return document.querySelectorAll('#chat-tokens .lmf-token').length")
        assert tokens == int(re.search(r"(\d+) tokens in", status).group(1))
        page.shot("chat")
    finally:
        driver.quit()

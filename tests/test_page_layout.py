"""Issue 26, the page and its PDF in Debian's headless Chromium against a real server of the shipped model:
the film and the verdict on the first screen together at 768×1024 and 1366×768, the prevalence in words
next to the probability, and a PDF that names the file and keeps each label apart from its value."""

from __future__ import annotations

import re

import pytest
from fpdf import FPDF
from pypdf import PdfReader

pytest_plugins = ["page_support"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]
SIZES = {"tablet": (768, 1024), "laptop": (1366, 768)}
PT_PER_MM = 72 / 25.4


def _open(chromium, server, size, path):
    from playwright.sync_api import expect

    w, h = SIZES[size]
    ctx = chromium.new_context(viewport={"width": w, "height": h}, accept_downloads=True)
    page = ctx.new_page()
    page.goto(server.url + "/")
    page.set_input_files("#file", str(path))
    expect(page.locator("#status")).to_have_text(f"Result for {path.name}:", timeout=60_000)
    page.wait_for_function("() => document.getElementById('pane-a').dataset.scale !== undefined")
    return ctx, page


def _inside(page, selector, w, h):
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} not displayed"
    inside = box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= w and box["y"] + box["height"] <= h
    return inside, box


@pytest.mark.parametrize("size", list(SIZES))
def test_film_and_verdict_are_both_in_the_viewport(chromium, page_server, val_originals, size, tmp_path):
    w, h = SIZES[size]
    ctx, page = _open(chromium, page_server, size, val_originals[-1].path)
    try:
        page.screenshot(path=str(tmp_path / f"{size}-{w}x{h}.png"))
        assert page.evaluate("() => window.scrollY") == 0
        for sel in ("#label", "#prob", "#prevalence-line", "#pane-a"):
            inside, box = _inside(page, sel, w, h)
            assert inside, f"{sel} at {box} is not inside the {w}×{h} viewport"
        pane = page.locator("#pane-a").bounding_box()
        assert pane["height"] >= 240 and pane["width"] >= 0.45 * w  # a film one can read, not a thumbnail
        assert float(page.locator("#pane-a").get_attribute("data-scale")) > 0
        note = page.locator("#prevalence-line").inner_text()
        assert re.search(r"about \d+ in 100 children X-rayed have pneumonia", note), note
        colour = page.eval_on_selector("#prevalence-line", "e => getComputedStyle(e).color")
        assert colour == page.eval_on_selector("body", "e => getComputedStyle(e).color")  # not small grey text
    finally:
        ctx.close()
    print(f"\n[layout] {size} screenshot in {tmp_path}")


def _chunks(pdf_page) -> list[tuple[str, float, float]]:
    out: list[tuple[str, float, float]] = []

    def visit(text, cm, tm, font, size):
        if text.strip():
            out.append((text.strip(), tm[4], tm[5]))

    pdf_page.extract_text(visitor_text=visit)
    return out


def test_report_names_the_file_and_keeps_labels_apart(chromium, page_server, val_originals, tmp_path):
    path = val_originals[-1].path
    ctx, page = _open(chromium, page_server, "laptop", path)
    try:
        with page.expect_download(timeout=60_000) as dl:
            page.locator("#report-btn").click()
        pdf = tmp_path / "report.pdf"
        dl.value.save_as(pdf)
    finally:
        ctx.close()
    reader = PdfReader(pdf)
    text = re.sub(r"\s+", " ", reader.pages[0].extract_text())
    assert f"File {path.name}" in text and path.name in text.split("request")[0]  # the header names it too
    assert re.search(r"about \d+ in 100 children X-rayed have pneumonia", text)
    chunks = _chunks(reader.pages[0])
    measure = FPDF()
    measure.set_font("Helvetica", "B", 9)
    labels = ("Decision", "Probability of pneumonia", "Chest X-ray gate", "Like the training films?", "File")
    value_x = set()
    for label in labels:
        (lx, ly), = [(x, y) for t, x, y in chunks if t == label]
        same_row = sorted(x for t, x, y in chunks if abs(y - ly) < 0.5 and x > lx)
        assert same_row, f"no value beside {label!r}"
        assert same_row[0] - lx >= measure.get_string_width(label) * PT_PER_MM + 2, f"{label!r} runs into its value"
        value_x.add(round(same_row[0], 1))
    assert len(value_x) == 1  # one value column

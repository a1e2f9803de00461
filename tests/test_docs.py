"""README and docs agree with the pins the renderer writes and with the model card's wording."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gendertool.project.render import COMPONENTS

REPO = Path(__file__).resolve().parent.parent
PIN_DOCS = ("README.md", "docs/building.md", "firmware/README.md")
ESP_JPEG = "^1.3.1"  # esp32-camera 2.1.5's own requirement (its idf_component.yml)


@pytest.mark.parametrize("doc", PIN_DOCS)
def test_docs_name_every_pinned_version(doc):
    text = (REPO / doc).read_text()
    for key in ("esp_tflite_micro", "esp_nn", "esp32_camera"):
        assert COMPONENTS[key] in text, f"{doc} does not name {key} {COMPONENTS[key]}"
    assert "esp_jpeg" in text and ESP_JPEG in text, f"{doc} does not list esp_jpeg {ESP_JPEG}"


def _row(text: str, first_cell: str) -> str:
    return next(line for line in text.splitlines() if re.match(rf"\|\s*`?{re.escape(first_cell)}`?\s*\|", line))


def test_pin_tables_list_esp_jpeg_as_a_row():
    assert ESP_JPEG in _row((REPO / "README.md").read_text(), "esp_jpeg")
    assert ESP_JPEG in _row((REPO / "firmware/README.md").read_text(), "espressif/esp_jpeg")


def test_tflite_micro_idf_requirement_is_the_tags():
    row = _row((REPO / "firmware/README.md").read_text(), "espressif/esp-tflite-micro")
    assert "v1.3.8 manifest asks for IDF ≥ 5.0" in row
    assert "accepts IDF ≥ 5.1" not in row


def test_readme_accuracy_names_its_split():
    text = " ".join((REPO / "README.md").read_text().split())
    m = re.search(r"(\d+\.\d) % INT8 accuracy on ([^(;]+)", text)
    assert m, "README must state the default model's INT8 accuracy"
    assert "held-out split" in m.group(2)
    assert (REPO / "models" / "heldout.txt").is_file()


def test_refdata_agrees_with_the_documented_camera_pins(refdata):
    versions = dict(
        line.split(" ", 1) for line in (refdata / "versions.txt").read_text().splitlines() if line and not line.startswith("#")
    )
    assert versions["esp32_camera_version"].strip() == COMPONENTS["esp32_camera"]
    assert versions["esp32_camera_esp_jpeg_constraint"].strip() == ESP_JPEG

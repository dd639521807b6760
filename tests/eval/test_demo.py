"""The demo's pipeline on a reduced budget: conversion, generation side by side, the report."""

import json
import os

import pytest

pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_demo_converts_generates_and_reports(tmp_path):
    from fp8port.demo import PRESET, SOURCE_NOTE, run_demo

    d = run_demo(tmp_path / "out", presets=("deepseek-v3.1",), modes=("weight-only",), max_tokens=64, progress=None)
    gen = d["extra"]["generation"]
    assert gen["preset"] == PRESET and len(gen["original"].split()) >= 5 and len(gen["quantized"].split()) >= 5
    ckpt = tmp_path / "out" / f"smollm2-135m-{PRESET}"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "fp8"  # the DeepSeek layout
    assert d["checkpoint_resident_bytes"]["fp8_layers"] > 0
    html = (tmp_path / "out" / "index.html").read_text()
    assert "4-bit grid" in html and gen["original"].split()[0] in html
    assert json.loads((tmp_path / "out" / "report.json").read_text())["note"] == SOURCE_NOTE

"""evaluate() on SmolLM2 with a small budget: determinism, the CLI, the page against its JSON,
and the page rendered in headless Chromium with its plots."""

import argparse
import html
import json
import os
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from html.parser import HTMLParser

import pytest

from fp8port.eval import evaluate, plots
from fp8port.eval.report import COLUMNS, ENGINE_COLUMNS, SENS_COLUMNS, format_cell

pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SETTINGS = dict(
    presets=("deepseek-v3.1", "mxfp4"), modes=("weight-only", "w8a8"), max_tokens=64, seq_len=64, sensitivity_layers=1
)


@pytest.fixture(scope="module")
def model_path():
    from fp8port.models import smollm2

    return smollm2()


@pytest.fixture(scope="module")
def evaluated(model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return evaluate(model_path, report_dir=out, progress=None, **SETTINGS), out


def test_report_content(evaluated):
    d, out = evaluated
    assert [(r["preset"], r["mode"]) for r in d["rows"]] == [
        ("deepseek-v3.1", "weight-only"),
        ("deepseek-v3.1", "w8a8"),
        ("mxfp4", "weight-only"),
        ("mxfp4", "w8a8"),
    ]
    assert len(d["layers"]) == 210 and d["texts"]["tokens"] == 64
    wo = {r["preset"]: r for r in d["rows"] if r["mode"] == "weight-only"}
    assert 0 < wo["deepseek-v3.1"]["kl"] < wo["mxfp4"]["kl"]
    assert wo["deepseek-v3.1"]["weight_sqnr_db"] > wo["mxfp4"]["weight_sqnr_db"] + 6
    assert wo["mxfp4"]["weight_mb"] < wo["deepseek-v3.1"]["weight_mb"] < d["reference"]["weight_mb"]
    stats = d["layer_stats"]
    assert max(stats["deepseek-v3.1"]["clipped"]) == 0  # the ceil rule cannot clip
    assert min(stats["mxfp4"]["clipped"]) > 0  # FLOOR lets amax / scale reach up to 8 > 6
    assert d["sensitivity"]["preset"] == "mxfp4" and len(d["sensitivity"]["measured"]) == 1
    assert json.loads((out / "report.json").read_text()) == d


def test_same_numbers_again_through_the_cli(evaluated, model_path, tmp_path, capsys):
    """Determinism: a second evaluation, through the `eval` verb, gives identical JSON."""
    from fp8port.cli import eval as verb

    d, _ = evaluated
    parser = argparse.ArgumentParser()
    verb.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "eval",
            str(model_path),
            "--presets",
            "deepseek-v3.1,mxfp4",
            "--max-tokens",
            "64",
            "--seq-len",
            "64",
            "--sensitivity-layers",
            "1",
            "--json",
            "--report",
            str(tmp_path),
        ]
    )
    assert args.run(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert json.dumps(again, sort_keys=True) == json.dumps(d, sort_keys=True)
    assert (tmp_path / "report.json").read_text() == (evaluated[1] / "report.json").read_text()


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self.data, self._cur, self._in_json = [], "", None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-key" in a:
            self._cur = [a.get("data-row"), a.get("data-sens"), a["data-key"], ""]
        if tag == "script" and a.get("type") == "application/json":
            self._in_json = True

    def handle_data(self, data):
        if self._cur is not None:
            self._cur[3] += data
        if self._in_json:
            self.data += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cur is not None:
            self.cells.append(tuple(self._cur))
            self._cur = None
        if tag == "script":
            self._in_json = False


def test_page_shows_exactly_the_json(evaluated):
    d, out = evaluated
    page = _Cells()
    page.feed((out / "index.html").read_text())
    assert json.loads(page.data) == d  # the embedded copy is the report
    row_cells = [c for c in page.cells if c[0] is not None]
    sens_cells = [c for c in page.cells if c[1] is not None]
    assert len(row_cells) == len(d["rows"]) * len(COLUMNS) + sum(k in d["reference"] for k in COLUMNS)
    assert len(sens_cells) == len(d["sensitivity"]["measured"]) * len(SENS_COLUMNS)
    for row, _, key, text in row_cells:
        value = d["reference"][key] if row == "reference" else d["rows"][int(row)][key]
        assert text == format_cell(COLUMNS[key][1], value), (row, key)
        assert float(text) == pytest.approx(value, rel=5e-3, abs=5e-5)
    for _, i, key, text in sens_cells:
        assert text == format_cell(SENS_COLUMNS[key][1], d["sensitivity"]["measured"][int(i)][key])


def _png_pixels(path):
    """(width, height, Counter of RGB tuples) of an 8-bit RGB/RGBA, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride = zlib.decompress(idat), width * bpp
    prev, colours = bytearray(stride), Counter()
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update(zip(line[0::bpp], line[1::bpp], line[2::bpp]))
        prev = line
    return width, height, colours


def _chromium(page, tmp_path, *args) -> subprocess.CompletedProcess:
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but `chromium` is not installed (.ci/run installs it with apt-get)")
        pytest.skip("headless Chromium not installed (apt-get install -y chromium); CI=true makes this a failure")
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
        page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, timeout=120, check=True, text=True)


def test_report_renders_in_headless_chromium(evaluated, tmp_path):
    _, out = evaluated
    shot = tmp_path / "shot.png"
    _chromium(out / "index.html", tmp_path, "--window-size=1200,2600", f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 50_000
    width, height, colours = _png_pixels(shot)
    assert (width, height) == (1200, 2600)
    assert len(colours) > 200  # text antialiasing, lines, heat maps: far from a blank page

    def rgb(h):
        return tuple(int(h[i : i + 2], 16) for i in (1, 3, 5))

    # both series' legend swatches (solid rects in palette colours) and the heat maps' grey cells
    assert {rgb(plots.colour(0)), rgb(plots.colour(1)), rgb(plots.EMPTY)} <= colours.keys()
    # the darkest clipping colour: mxfp4 clips on every layer
    assert any(r > 150 and g < 100 and b < 100 for r, g, b in colours)


def _rgb(h):
    return tuple(int(h[i : i + 2], 16) for i in (1, 3, 5))


def test_engine_sections_render_in_headless_chromium(tiny_report, tmp_path):
    """A checkpoint report: every engine's section is in the rendered page with its figures, the engine
    transformers cannot load says so, and each evaluated engine's bar is drawn in its series colour."""
    d, out = tiny_report
    dom = _chromium(out / "index.html", tmp_path, "--dump-dom").stdout
    sections = d["checkpoint"]["engines"]
    for sec in sections:
        assert f'id="engine-{sec["engine"]}"' in dom
        if sec["status"] == "evaluated":
            for key, (_, fmt) in ENGINE_COLUMNS.items():
                assert f">{format_cell(fmt, sec[key])}</td>" in dom
        else:
            assert f"No figures: {html.escape(sec['message'], quote=False)}" in dom
    shot = tmp_path / "shot.png"
    _chromium(out / "index.html", tmp_path, "--window-size=1200,6000", f"--screenshot={shot}")
    _, _, colours = _png_pixels(shot)
    for sec in sections:
        if sec["status"] == "evaluated":
            changed = sec["counts"]["requantize"] + sec["counts"]["dequantize"]
            bar = 300 * changed // sum(sec["counts"].values()) * 14  # solid pixels of its bar
            assert colours[_rgb(plots.colour(d["presets"].index(sec["engine"])))] >= bar * 0.9, sec["engine"]

"""The fp8port command line: JSON parses, tables say the right things, errors are one line."""

import json
import math
import subprocess
import sys

import pytest

from fp8port.cli.main import VERBS, main
from fp8port.formats import FORMATS, get_format


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def row(out: str, first: str) -> list[str]:
    """The whitespace-split table row whose first cell is `first`."""
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == [first]]
    assert len(rows) == 1, f"expected one row starting {first!r} in:\n{out}"
    return rows[0]


# ---- formats -------------------------------------------------------------------------


def test_formats_table_lists_every_format(capsys):
    rc, out, err = run(capsys, "formats")
    assert rc == 0 and err == ""
    for name in FORMATS:
        assert row(out, name)[1] == str(FORMATS[name].bits)
    e4m3 = row(out, "float8_e4m3fn")
    assert e4m3[2:6] == ["448", "2^-9", "-", "0x7f"]
    assert row(out, "float8_e5m2")[2:6] == ["57344", "2^-16", "0x7c", "0xfc"]
    assert row(out, "hifloat8")[2:7] == ["32768", "2^-22", "0x6f", "0xef", "0x80"]
    assert row(out, "float8_e8m0fnu")[2] == "2^127"


def test_formats_table_is_aligned(capsys):
    _, out, _ = run(capsys, "formats")
    lines = out.splitlines()
    header, rule = lines[0], lines[1]
    # every column of the rule starts where its header starts
    starts = [i for i, ch in enumerate(rule) if ch == "-" and (i == 0 or rule[i - 1] == " ")]
    assert [header[i - 1] if i else " " for i in starts] == [" "] * len(starts)
    assert len(starts) == 7


def test_formats_json(capsys):
    rc, out, err = run(capsys, "formats", "--json")
    assert rc == 0 and err == ""
    data = json.loads(out)
    assert [d["name"] for d in data] == list(FORMATS)
    e4m3 = next(d for d in data if d["name"] == "float8_e4m3fn")
    assert e4m3["max"] == 448 and e4m3["min_subnormal"] == 2**-9 and e4m3["nan_codes"] == ["0x7f", "0xff"]


def test_formats_name_spec_and_value_table(capsys):
    rc, out, err = run(capsys, "formats", "float8_e4m3fn")
    assert rc == 0 and err == ""
    assert "max:           448" in out
    assert "min subnormal: 2^-9 (0.001953125)" in out
    assert row(out, "0x7e") == ["0x7e", "01111110", "448", "normal"]
    assert row(out, "0x7f") == ["0x7f", "01111111", "nan", "nan"]
    assert row(out, "0x80") == ["0x80", "10000000", "-0", "zero"]
    assert row(out, "0x01") == ["0x01", "00000001", "0.001953125", "subnormal"]
    assert sum(line.startswith("0x") for line in out.splitlines()) == 256


def test_formats_name_alias_and_sub_byte_table(capsys):
    rc, out, _ = run(capsys, "formats", "e2m1")
    assert rc == 0
    assert row(out, "0x07") == ["0x07", "0111", "6", "normal"]
    assert sum(line.startswith("0x") for line in out.splitlines()) == 16


@pytest.mark.parametrize("name", list(FORMATS))
def test_formats_name_json_has_every_code(capsys, name):
    rc, out, _ = run(capsys, "formats", name, "--json")
    assert rc == 0
    data = json.loads(out)  # strict JSON: NaN/Inf are strings
    spec = get_format(name)
    assert data["name"] == name and len(data["codes"]) == spec.ncodes
    for entry in data["codes"]:
        c = entry["code"]
        assert entry["hex"] == f"0x{c:02x}" and entry["class"] == spec.classes[c].value
        v = spec.values[c]
        if math.isfinite(v):
            assert entry["value"] == v and math.copysign(1, entry["value"]) == math.copysign(1, v)
        else:
            assert entry["value"] == ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))


# ---- profiles ------------------------------------------------------------------------


def test_profiles_text_and_json(capsys):
    from fp8port.codec.profiles import PROFILES

    rc, out, _ = run(capsys, "profiles")
    assert rc == 0
    for name, p in PROFILES.items():
        assert f"\n{name}\n" in f"\n{out}"
        assert f"verified: {p.verified}" in out
    rc, out, _ = run(capsys, "profiles", "--json")
    data = {d["name"]: d for d in json.loads(out)}
    assert set(data) == set(PROFILES)
    assert data["default"]["formats"] is None
    assert data["triton-hopper"]["formats"] == ["float8_e4m3fn", "float8_e5m2"]
    assert data["ml_dtypes"]["description"] == PROFILES["ml_dtypes"].description


# ---- encode / decode -----------------------------------------------------------------


def test_encode_table(capsys):
    rc, out, err = run(
        capsys, "encode", "float8_e4m3fn", "1", "448", "500", "-inf", "-1e-3", "0x1.8p3", "--profile", "torch"
    )
    assert rc == 0 and err == ""
    assert "profile torch" in out and "overflow saturate" in out
    assert row(out, "1") == ["1", "0x38", "00111000", "1"]
    assert row(out, "500") == ["500", "0x7e", "01111110", "448"]  # torch saturates E4M3
    assert row(out, "-inf") == ["-inf", "0xfe", "11111110", "-448"]
    assert row(out, "-0.001") == ["-0.001", "0x81", "10000001", "-0.001953125"]
    assert row(out, "12") == ["12", "0x54", "01010100", "12"]


def test_encode_json_and_options(capsys):
    rc, out, _ = run(capsys, "encode", "e4m3", "500", "nan", "--overflow", "nonfinite", "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["format"] == "float8_e4m3fn" and data["overflow"] == "nonfinite" and data["profile"] == "default"
    assert data["results"][0] == {"input": 500.0, "code": 0x7F, "hex": "0x7f", "decoded": "nan"}
    assert data["results"][1]["input"] == "nan"
    rc, out, _ = run(capsys, "encode", "hifloat8", "40960", "--json")
    assert json.loads(out)["rounding"] == "away"


def test_encode_rounding_option(capsys):
    # 1.0625 lies half way between E4M3 1.0 (0x38) and 1.125 (0x39).
    _, out, _ = run(capsys, "encode", "e4m3", "1.0625", "--rounding", "away", "--json")
    assert json.loads(out)["results"][0]["hex"] == "0x39"
    _, out, _ = run(capsys, "encode", "e4m3", "1.0625", "--json")
    assert json.loads(out)["results"][0]["hex"] == "0x38"


def test_decode_hex_and_decimal(capsys):
    rc, out, err = run(capsys, "decode", "float8_e4m3fn", "0x7e", "126", "0xff", "0")
    assert rc == 0 and err == ""
    assert [line.split() for line in out.splitlines()[2:]] == [
        ["0x7e", "01111110", "448", "normal"],
        ["0x7e", "01111110", "448", "normal"],
        ["0xff", "11111111", "nan", "nan"],
        ["0x00", "00000000", "0", "zero"],
    ]
    _, out, _ = run(capsys, "decode", "hifloat8", "0x6f", "--json")
    assert json.loads(out)["results"] == [{"code": 0x6F, "hex": "0x6f", "value": "inf", "class": "inf"}]


# ---- errors --------------------------------------------------------------------------


def test_unknown_format_is_one_line_exit_2(capsys):
    rc, out, err = run(capsys, "formats", "float8_e9m9")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("fp8port: error: unknown format 'float8_e9m9'; valid: ")
    assert all(name in err for name in FORMATS)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["encode", "e4m3", "1", "--profile", "nvidia"], "unknown profile 'nvidia'"),
        (["encode", "e4m3", "1", "--rounding", "up"], "unknown rounding 'up'"),
        (["encode", "hifloat8", "1", "--profile", "torch"], "profile 'torch' does not define hifloat8"),
        (["encode", "e4m3", "1000", "--overflow", "error"], "1000"),
        (["decode", "e2m1", "0x10"], "found 0x10 at index (0,)"),
    ],
)
def test_library_errors_are_one_line_exit_2(capsys, argv, needle):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("fp8port: error: ") and needle in err


@pytest.mark.parametrize(
    "argv", [[], ["frobnicate"], ["decode", "e4m3", "0x100"], ["encode", "e4m3", "one"], ["formats", "--bogus"]]
)
def test_usage_errors_exit_2(capsys, argv):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == "" and "usage: fp8port" in err


def test_help_exits_0(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0
    assert all(verb in out for verb in ("formats", "profiles", "encode", "decode"))


def test_every_verb_module_has_the_hook():
    import argparse

    from fp8port.cli.main import build_parser

    assert all(callable(verb.add_parser) for verb in VERBS)
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))

    def runs(parser):  # every (sub-)command ends in a callable `run`
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            return all(runs(p) for p in nested[0].choices.values())
        return callable(parser._defaults.get("run"))

    assert len(sub.choices) >= 14 and all(runs(p) for p in sub.choices.values())


# ---- the installed entry points ------------------------------------------------------


def test_python_dash_m_runs_the_cli():
    ok = subprocess.run(
        [sys.executable, "-m", "fp8port", "formats", "float8_e4m3fn", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["codes"][0x7E]["value"] == 448
    bad = subprocess.run(
        [sys.executable, "-m", "fp8port", "formats", "nope"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()] and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("fp8port: error: unknown format 'nope'; valid: float4_e1m2")

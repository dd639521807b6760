"""The chip data file: every number sourced and marked; names resolve; bad data is rejected."""

import copy
import json
from importlib import resources

import pytest

from fp8port.deploy import ChipDataError, Column, Confidence, get_chip, load_chips
from fp8port.deploy.chips import parse_chips
from fp8port.errors import UnknownNameError

MARKERS = {c.value for c in Confidence}


def _raw():
    return json.loads(resources.files("fp8port.deploy").joinpath("chips.json").read_text("utf-8"))


def _numbers(node, where=""):
    """Every number object in the raw document (dicts with a 'value' key)."""
    if isinstance(node, dict):
        if "value" in node:
            yield where, node
        for k, v in node.items():
            yield from _numbers(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _numbers(v, f"{where}[{i}]")


def test_every_number_has_source_and_marker():
    numbers = list(_numbers(_raw()))
    assert len(numbers) > 200
    for where, n in numbers:
        if n["value"] is None:
            assert n.get("reason", "").strip(), where
        else:
            assert n["confidence"] in MARKERS, where
            assert len(n["source"].strip()) > 10, where
            assert n["unit"], where
    for chip in load_chips().values():
        assert chip.native.source.strip() and chip.native.confidence in Confidence


def test_required_chips_present():
    names = set(load_chips())
    for required in (
        "A100",
        "H100",
        "H800",
        "H20",
        "H200",
        "B200",
        "MI300X",
        "Ascend 910B",
        "Ascend 910C",
        "Ascend 950PR",
        "Ascend 950DT",
        "MLU370-X8",
        "MTT S4000",
        "MetaX C500",
        "BR100",
        "Kunlun P800",
    ):
        assert required in names


def test_key_figures():
    h100 = get_chip("H100")
    assert h100.throughput[Column.FP8].value == 1979  # dense, not the sparse 3,958
    assert h100.memory_bandwidth.si == 3.35e12
    c910 = get_chip("ascend-910c")
    assert (c910.devices_per_package, c910.memory.value) == (2, 128)
    assert not c910.throughput[Column.FP8].known
    pr = get_chip("950pr")
    assert (pr.memory.value, pr.memory_bandwidth.value, pr.throughput[Column.FP4].value) == (128, 1.6, 2000)
    assert pr.throughput[Column.BF16].confidence is Confidence.EST


def test_aliases_and_unknown():
    assert get_chip("ASCEND_910C") is get_chip("Ascend 910C") is get_chip("910c")
    with pytest.raises(UnknownNameError) as exc:
        get_chip("tpu-v9")
    assert "H800" in exc.value.valid and "tpu-v9" in str(exc.value)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: c["memory"].pop("source"), "source"),
        (lambda c: c["memory"].update(confidence="maybe"), "confidence"),
        (lambda c: c["memory"].update(unit="GiB"), "unit"),
        (lambda c: c["throughput"]["fp8"].update(value=None, reason=""), "reason"),
        (lambda c: c["throughput"].pop("hif8"), "hif8"),
        (lambda c: c["native"].update(paths=["fp9"]), "fp9"),
    ],
)
def test_bad_data_rejected(edit, message):
    doc = copy.deepcopy(_raw())
    edit(doc["chips"][1])
    with pytest.raises(ChipDataError, match=message):
        parse_chips(doc)


def test_ascend_chips_list_the_ascendv1_types_they_run():
    from fp8port.deploy import ascend_types, get_chip, plan

    assert ascend_types(get_chip("910c")) == ("W8A8_DYNAMIC", "W8A8", "W8A16")  # A2/A3: int8 paths
    assert ascend_types(get_chip("950pr"))[:3] == ("W8A8_MXFP8", "W4A8_MXFP", "W4A4_MXFP4")  # A5: MX
    assert ascend_types(get_chip("h800")) == ()
    from fp8port.checkpoint.layouts.ascend import AscendType

    for chip in ("910b", "910c", "950pr", "950dt"):
        for t in ascend_types(get_chip(chip)):
            AscendType.writable(t)  # every type listed is one `convert --layout ascend` writes
    out = plan("deepseek-v3", "910c", presets=("deepseek-v3.1",), compare=("950pr",))
    assert out["chips"][1]["ascend_types"][0] == "W8A8_MXFP8"

"""Named MX semantic cases (tests/golden/mx_cases.json): FLOOR / RCEIL / EVEN / CEIL, zero,
subnormal and tiny blocks, saturation, partial blocks; bytes asserted on every backend."""

import numpy as np
import pytest
from conftest import backends_for, bytes_of, load_golden, quantize_on

from fp8port.quant import get_preset

CASES = load_golden("mx_cases.json")["cases"]


def _scheme(c):
    s = get_preset(c["preset"]).scheme(c["role"])
    s = s.with_(scale_rule=c["scale_rule"])
    return s if s.storage.value == "e8m0" else s.with_(storage="e8m0")


@pytest.mark.parametrize(
    "c,be", [pytest.param(c, be, id=f"{c['name']}[{be}]") for c in CASES for be in backends_for(_scheme(c))]
)
def test_mx_case(c, be):
    x = np.zeros((1, c["length"]), np.float32)
    x[0, : len(c["input"])] = c["input"]
    q = quantize_on(x, _scheme(c), be)
    assert [f"0x{b:02x}" for b in bytes_of(q.scale)[0]] == c["expected_scale_bytes"], c["why"]
    assert [f"0x{b:02x}" for b in q.codes[0, : len(c["expected_codes"])]] == c["expected_codes"], c["why"]
    assert not q.codes[0, len(c["input"]) :].any()

"""Roofline formulas on hand-worked cases."""

import math

import pytest

from fp8port.deploy import Bound, Work, decode_work, get_chip, load_model, prefill_work, roofline, weight_bytes
from fp8port.deploy.chips import MatmulPath
from fp8port.deploy.execution import Execution, choose
from fp8port.deploy.memory import parse_encoding
from fp8port.deploy.roofline import Phase, attention_flops_per_token, expected_distinct_experts


def test_roofline_bounds():
    est = roofline(Work(flops=2e12, bytes=1e9, tokens=10), peak_flops=1e15, bandwidth=1e12)
    assert (est.compute_s, est.memory_s, est.bound) == (2e-3, 1e-3, Bound.COMPUTE)
    assert est.tokens_per_s == pytest.approx(5000)
    est = roofline(Work(flops=1e12, bytes=3e9, tokens=1), peak_flops=1e15, bandwidth=1e12)
    assert est.bound is Bound.MEMORY and est.time_s == pytest.approx(3e-3)


def test_expected_distinct_experts():
    assert expected_distinct_experts(4, 2, 1) == 2  # one token hits exactly k
    assert expected_distinct_experts(4, 2, 2) == 3  # 4 * (1 - (1/2)^2)
    assert expected_distinct_experts(256, 8, 4096) == pytest.approx(256)


def test_attention_flops():
    ds = load_model("deepseek-v3")
    # decode, absorbed: 2 * 128 heads * t * (2*512 + 64) * 61 layers
    assert attention_flops_per_token(ds, 10, Phase.DECODE) == 2 * 128 * 10 * 1088 * 61
    # prefill, per head: 2 * 128 * t * (128 + 64 + 128) * 61
    assert attention_flops_per_token(ds, 10, Phase.PREFILL) == 2 * 128 * 10 * 320 * 61


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-dense")


def test_decode_work(tiny):
    wb = weight_bytes(tiny, "bf16")
    w = decode_work(tiny, wb, context=100, batch=1, kv_per_token=512)
    # FLOPs: 2 x 1,641,728 activated + attention 2 * 8 heads * 100 keys * (32 + 32) * 2 layers = 204,800
    assert w.flops == 3_283_456 + 204_800
    # bytes: every BF16 weight but the embedding (3,795,456 - 512,000) + 100 cached tokens x 512 bytes
    assert w.bytes == 3_283_456 + 51_200
    assert w.tokens == 1
    w4 = decode_work(tiny, wb, context=100, batch=4, kv_per_token=512)
    assert w4.bytes == 3_283_456 + 4 * 51_200  # weights read once for the batch


def test_prefill_work(tiny):
    wb = weight_bytes(tiny, "bf16")
    w = prefill_work(tiny, wb, context=100, batch=2, kv_per_token=512)
    # 200 tokens x 2 x activated, plus per prompt sum_{t=1..100} 2048 t = 2048 * 5050, for 2 prompts
    assert w.flops == 200 * 3_283_456 + 2 * 2048 * 5050
    assert w.bytes == 3_283_456 + 200 * 512  # weights once, cache written once
    assert w.tokens == 200


def test_moe_decode_reads_only_hit_experts():
    ds = load_model("deepseek-v3")
    wb = weight_bytes(ds, "deepseek-v3.1")
    w = decode_work(ds, wb, context=1, batch=1, kv_per_token=0)
    assert w.bytes == pytest.approx(wb.always_read + wb.routed * 8 / 256)
    assert w.flops == 2 * ds.activated_params() + attention_flops_per_token(ds, 1, Phase.DECODE)


@pytest.mark.parametrize(
    "chip,preset,execution,path",
    [
        ("H800", "deepseek-v3.1", Execution.NATIVE, MatmulPath.FP8_BLOCK),
        ("H800", "mxfp8", Execution.NATIVE, MatmulPath.FP8_BLOCK),  # E8M0 scales widened in software
        ("H800", "mxfp4", Execution.EMULATED, MatmulPath.BF16),
        ("B200", "mxfp8", Execution.NATIVE, MatmulPath.MXFP8),
        ("B200", "nvfp4", Execution.NATIVE, MatmulPath.NVFP4),
        ("Ascend 910C", "deepseek-v3.1", Execution.EMULATED, MatmulPath.BF16),
        ("Ascend 950PR", "mxfp4", Execution.NATIVE, MatmulPath.MXFP4),
        ("Ascend 950PR", "hif8", Execution.NATIVE, MatmulPath.HIF8),
        ("Ascend 950PR", "nvfp4", Execution.EMULATED, MatmulPath.BF16),
        ("A100", "deepseek-v3", Execution.EMULATED, MatmulPath.BF16),
        ("MI355X", "mxfp4", Execution.NATIVE, MatmulPath.MXFP4),
        ("B200", "mxint8", Execution.EMULATED, MatmulPath.BF16),
    ],
)
def test_native_or_emulated(chip, preset, execution, path):
    c = choose(get_chip(chip), parse_encoding(preset))
    assert (c.execution, c.path) == (execution, path)


def test_emulated_runs_at_bf16_rate_with_small_bytes():
    from fp8port.deploy import plan

    r = plan("deepseek-v3", "h800", presets=["bf16", "mxfp4"], context=1024, batch=1)
    bf16, fp4 = r["results"]
    assert fp4["execution"] == "emulated" and fp4["peak"]["value"] == bf16["peak"]["value"] == 989.5
    assert fp4["weights"]["total"] < bf16["weights"]["total"] / 3
    assert fp4["decode"]["bound"] == "memory"
    n = fp4["min_chips"]
    assert n == math.ceil(fp4["total"] / (80e9 * 0.9))
    assert fp4["decode"]["memory_s"] == pytest.approx(fp4["decode"]["bytes"] / (n * 3.35e12))

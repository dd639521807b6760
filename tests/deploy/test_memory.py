"""Weight and KV-cache bytes, worked out by hand."""

import math

import pytest

from fp8port.deploy import kv_bytes_per_token, kv_cache_bytes, load_model, min_chips, weight_bytes
from fp8port.deploy.memory import parse_encoding, quantized_tensor_bytes
from fp8port.errors import UnknownNameError
from fp8port.quant import get_preset

# tiny-dense: hidden 256, intermediate 688, 2 layers, 8 heads / 2 KV heads of 32, vocab 1000, untied.
# Matmul weights per layer (rows x cols, as HF stores them):
#   q 256x256 = 65,536   k 64x256 = 16,384   v 64x256 = 16,384   o 256x256 = 65,536
#   gate 688x256 = 176,128   up 688x256 = 176,128   down 256x688 = 176,128   -> 692,224 per layer
LINEAR = 2 * 692_224  # 1,384,448 quantizable parameters
NORMS = 2 * 2 * 256 + 256  # two RMSNorms per layer plus the final one: 1,280
EMB = HEAD = 1000 * 256  # 256,000 each, kept BF16
DENSE_BYTES = 2 * (NORMS + EMB + HEAD)  # 1,026,560


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-dense")


def test_tiny_parameter_count(tiny):
    assert tiny.params() == LINEAR + NORMS + EMB + HEAD == 1_897_728
    assert tiny.activated_params() == 1_897_728 - EMB  # the input embedding is a lookup


def test_tiny_bf16(tiny):
    wb = weight_bytes(tiny, "bf16")
    assert (wb.codes, wb.scales, wb.total) == (0, 0, 2 * 1_897_728)


def test_tiny_deepseek_v3(tiny):
    # 128x128 fp32 blocks, partial blocks count: q 2x2, k 1x2, v 1x2, o 2x2, gate/up ceil(688/128)=6 x 2,
    # down 2 x 6 -> 4+2+2+4+12+12+12 = 48 blocks per layer, 96 in all, 4 bytes each.
    wb = weight_bytes(tiny, "deepseek-v3")
    assert (wb.codes, wb.scales, wb.dense) == (LINEAR, 96 * 4, DENSE_BYTES)
    assert wb.total == 2_411_392


def test_tiny_mxfp4(tiny):
    # 4-bit codes pack two per byte; 1x32 E8M0 scales along the last axis (K), one byte each:
    # q 256*8, k 64*8, v 64*8, o 256*8, gate/up 688*8, down 256*ceil(688/32)=256*22 -> 21,760 per layer.
    wb = weight_bytes(tiny, "mxfp4")
    assert (wb.codes, wb.scales) == (LINEAR // 2, 2 * 21_760)
    assert wb.total == 692_224 + 43_520 + DENSE_BYTES == 1_762_304


def test_tiny_nvfp4_has_tensor_scales(tiny):
    # 1x16 E4M3 scales: q 256*16, k 64*16, v 64*16, o 256*16, gate/up/down 688*16 or 256*43 = 11,008 each
    # -> 43,264 per layer, plus one fp32 per-tensor scale for each of the 7 matrices (28 bytes).
    wb = weight_bytes(tiny, "nvfp4")
    assert wb.scales == 2 * (43_264 + 7 * 4)


def test_partial_blocks_and_packing():
    fp6 = get_preset("mxfp6_e2m3").weight
    # 3 x 33 FP6 values: 99 * 6 bits = 74.25 bytes -> 75; 3 rows x ceil(33/32)=2 blocks of one byte
    assert quantized_tensor_bytes((3, 33), fp6) == (75, 6)
    hif8 = get_preset("hif8").weight  # one fp32 scale per row
    assert quantized_tensor_bytes((5, 7), hif8) == (35, 20)


def test_tiny_kv_cache(tiny):
    # GQA: K and V, 2 KV heads x 32 dims, 2 layers = 256 values per token; BF16 -> 512 bytes
    assert kv_bytes_per_token(tiny) == 512
    assert kv_cache_bytes(tiny, context=100, batch=3) == 100 * 3 * 512
    assert kv_cache_bytes(tiny, context=100, batch=3, kv_bytes=1) == 100 * 3 * 256


def test_min_chips():
    assert min_chips(90, 100, 0.9) == 1
    assert min_chips(91, 100, 0.9) == 2
    assert min_chips(720, 80, 1.0) == 9
    with pytest.raises(ValueError):
        min_chips(1, 100, 0)


def test_unknown_preset_lists_bf16():
    with pytest.raises(UnknownNameError) as exc:
        parse_encoding("fp3")
    assert "bf16" in exc.value.valid and "mxfp4" in exc.value.valid


# DeepSeek-V3 (config_671B): hidden 7168, 61 layers (3 dense + 58 MoE), 256 routed + 1 shared expert of 2048,
# MLA q_lora 1536, kv_lora 512, nope 128, rope 64, v 128, 128 heads, vocab 129,280, one MTP layer.
H, V = 7168, 129_280
ATTN = 1536 * H + 1536 + 24576 * 1536 + 576 * H + 512 + 32768 * 512 + H * 16384  # incl. q_a / kv_a norms
DENSE_MLP = 3 * 18432 * H
EXPERT = 3 * 2048 * H
MOE_MLP = 257 * EXPERT + 256 * H + 256  # routed + shared experts, router gate, score-correction bias
MAIN = 61 * (ATTN + 2 * H) + 3 * DENSE_MLP + 58 * MOE_MLP + 2 * V * H + H


@pytest.fixture(scope="module")
def dsv3():
    return load_model("deepseek-v3")


def test_deepseek_v3_parameters(dsv3):
    assert ATTN == 187_107_328 and EXPERT == 44_040_192
    assert dsv3.params() == MAIN == 671_026_419_200  # README: 671B main model
    # The HF checkpoint's layer 61 (MTP) repeats an MoE layer plus eh_proj, enorm, hnorm, its own embedding
    # and head, and a norm: README "685B" = 671B + 14B.
    mtp = ATTN + 2 * H + MOE_MLP + 2 * V * H + 2 * H * H + 3 * H
    assert dsv3.params(include_mtp=True) == MAIN + mtp == 684_489_845_504
    # Activated per token: all but the input embedding and 248 of the 256 routed experts per MoE layer.
    assert dsv3.activated_params() == MAIN - V * H - 58 * 248 * EXPERT == 36_625_618_432  # README: 37B


def test_deepseek_v3_fp8_bytes(dsv3):
    # 128x128 blocks per layer: attention q_a 12x56 + q_b 192x12 + kv_a 5x56 + kv_b 256x4 + o 56x128 = 11,448;
    # dense MLP 3 x 144x56 = 24,192; one expert 3 x 16x56 = 2,688, 257 of them per MoE layer.
    blocks = 61 * 11_448 + 3 * 24_192 + 58 * 257 * 2_688
    dense_params = 2 * V * H + 61 * (2 * H + 1536 + 512) + H + 58 * 256 * H  # embed, head, norms, router
    bias = 58 * 256  # e_score_correction_bias, F32
    wb = weight_bytes(dsv3, "deepseek-v3.1")
    assert wb.scales == 4 * blocks == 163_352_928
    assert wb.codes == MAIN - dense_params - bias
    assert wb.dense == 2 * dense_params + 4 * bias
    assert wb.total == 673_150_611_808
    assert weight_bytes(dsv3, "deepseek-v3").total == wb.total  # same layout, only scale values differ
    assert weight_bytes(dsv3, "bf16").total == 2 * (MAIN - bias) + 4 * bias == 1_342_052_868_096
    assert wb.routed == 58 * 256 * (EXPERT + 2_688 * 4)


def test_deepseek_v3_mla_kv_cache(dsv3):
    # absorbed MLA caches kv_lora 512 + rope 64 = 576 values per layer: 35,136 per token, 70,272 bytes BF16
    assert kv_bytes_per_token(dsv3) == 70_272
    assert kv_cache_bytes(dsv3, context=131_072, batch=1) == 70_272 * 131_072
    assert math.isclose(kv_cache_bytes(dsv3, 131_072, 1) / 2**30, 8.578125)

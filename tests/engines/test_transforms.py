"""Each engine transform byte for byte against its transcription (or the engine's own installed code) on
adversarial block-FP8 weights: scales just above and below powers of two (near-ties of log2), block maxima
at powers of two, zero blocks, blocks under the 1e-4 clamp, float32-subnormal products, bf16 ties, ragged
edges."""

from types import SimpleNamespace

import ml_dtypes
import numpy as np
import pytest
import torch

from fp8port import engines
from fp8port.engines.base import Action, Context, Dense
from fp8port.engines.gguf import q8_0_blocks
from fp8port.quant import QuantizedTensor, Role, get_preset
from fp8port.quant.tensor import Framework

from . import transcriptions as tr

V3 = get_preset("deepseek-v3").weight
CTX = Context(Dense.BFLOAT16, "llama", "fp8")
SHAPES = [(256, 384), (200, 300), (130, 129), (64, 1536)]  # aligned, and ragged on either axis


def adversarial(shape, seed) -> QuantizedTensor:
    """A deepseek-v3 weight (E4M3 codes, float32 128x128 scales) whose blocks hit the edge cases."""
    rng = np.random.default_rng(seed)
    m, n = shape
    gm, gn = -(-m // 128), -(-n // 128)
    codes = rng.integers(0, 256, shape, dtype=np.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0x7E  # no NaN codes: checkpoints hold finite weights
    k = rng.integers(-14, -4, (gm, gn))
    mant = rng.integers(1 << 23, 1 << 24, (gm, gn))
    scale = np.ldexp(mant.astype(np.float64) / (1 << 23), k).astype(np.float32)
    cases = [
        lambda e: np.float32(np.ldexp(1 + 2.0**-23, e)),  # 1 ulp above a power of two: log2 rounds to e
        lambda e: np.float32(np.ldexp(1 + 2.0**-22, e)),
        lambda e: np.float32(np.ldexp(1 + 5 * 2.0**-23, e)),
        lambda e: np.float32(np.ldexp(1, e)),  # exactly a power of two
        lambda e: np.nextafter(np.float32(np.ldexp(1, e)), np.float32(0)),  # just below
        lambda e: np.float32(np.ldexp(1 + 2.0**-8, e)),  # code 1.0 x scale: a bf16 tie
        lambda e: np.float32(3e-42),  # float32-subnormal products
        lambda e: np.float32(1e-9),  # block amax far under the 1e-4 clamp
    ]
    for i, (r, c) in enumerate(np.ndindex(gm, gn)):
        blk = (slice(r * 128, (r + 1) * 128), slice(c * 128, (c + 1) * 128))
        case = i % (len(cases) + 1)
        if case == len(cases):
            codes[blk] = 0  # an all-zero block
            continue
        scale[r, c] = cases[case](int(k[r, c]))
        codes[blk][0, 0] = 0x7E  # the block maximum is 448 x scale
    return QuantizedTensor(
        codes=codes,
        scale=scale,
        scale_fp32=scale,
        shape=tuple(shape),
        scheme=V3,
        role=Role.WEIGHT,
        src_dtype="float32",
        framework=Framework.NUMPY,
    )


def torch_pair(q):
    return (
        torch.from_numpy(np.asarray(q.codes).copy()).view(torch.float8_e4m3fn),
        torch.from_numpy(np.asarray(q.scale_fp32).copy()),
    )


def requant_step(engine, q):
    """The REQUANTIZE step the engine plans for an aligned weight of q's scheme (ragged shapes too get it
    here: the transform itself pads them; vLLM's MoE path calls it on any shape)."""
    step = engine.plan(
        SimpleNamespace(name="model.layers.0.mlp.down_proj.weight", shape=(128, 128), scheme=q.scheme), CTX
    )
    assert step.action is Action.REQUANTIZE
    return step


def assert_same_q(held, codes: torch.Tensor, scale_fp32: torch.Tensor):
    assert np.array_equal(np.asarray(held.q.codes), codes.view(torch.uint8).numpy())
    assert np.array_equal(
        np.asarray(held.q.scale_fp32, np.float32).view(np.uint32), scale_fp32.float().numpy().view(np.uint32)
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_vllm_sm100_equals_requant_weight_ue8m0_inplace(shape):
    q = adversarial(shape, seed=shape[0] + shape[1])
    e = engines.get("vllm-sm100")
    held = e.requantize(requant_step(e, q), q, CTX)
    w, s = torch_pair(q)
    tr.vllm_requant_weight_ue8m0_inplace(w, s)
    assert_same_q(held, w, s)
    assert np.array_equal(held.values, (w.float() * tr.expand_scales(s, shape, (128, 128))).numpy())


def test_the_adversarial_blocks_reach_the_float_log2_near_tie():
    """vLLM's float log2 and the bitwise rule disagree on some block of the data above (else the test
    would not tell them apart)."""
    q = adversarial((256, 384), seed=640)
    w, s = torch_pair(q)
    amax = (w.float() * tr.expand_scales(s, w.shape, (128, 128))).abs().view(2, 128, 3, 128).amax(dim=(1, 3))
    sf = amax.clamp(1e-4) / 448.0
    assert (tr.vllm_ceil_to_ue8m0(sf) != tr.sglang_ceil_to_ue8m0(sf)).any()


@pytest.mark.parametrize("shape", SHAPES)
def test_sglang_sm100_equals_requant_weight_ue8m0(shape):
    q = adversarial(shape, seed=3 * shape[0] + shape[1])
    e = engines.get("sglang-sm100")
    held = e.requantize(requant_step(e, q), q, CTX)
    codes, sf = tr.sglang_requant_weight_ue8m0(*torch_pair(q))
    assert_same_q(held, codes, sf)
    assert held.quantized_from.dtype == ml_dtypes.bfloat16  # SGLang requantizes the bf16 values


@pytest.mark.parametrize("shape", [(256, 384), (200, 320), (130, 96)])
def test_vllm_ascend_950_equals_resolve_then_npu_dynamic_mx_quant(shape):
    q = adversarial(shape, seed=5 * shape[0] + shape[1])
    e = engines.get("vllm-ascend-950")
    step = e.plan(SimpleNamespace(name="model.layers.0.mlp.down_proj.weight", shape=shape, scheme=q.scheme), CTX)
    assert step.action is Action.REQUANTIZE
    held = e.apply(step, q, CTX)
    resolved = tr.ascend_resolve_block_scales(*torch_pair(q), 128, 128, torch.bfloat16)
    codes, scale_bytes = tr.npu_dynamic_mx_quant_alg0(resolved)
    assert np.array_equal(np.asarray(held.q.codes), codes.view(torch.uint8).numpy())
    assert np.array_equal(np.asarray(held.q.scale).view(np.uint8), scale_bytes.numpy())


@pytest.mark.parametrize("shape", SHAPES)
def test_vllm_ascend_a2_equals_resolve_block_scales(shape):
    q = adversarial(shape, seed=7 * shape[0] + shape[1])
    e = engines.get("vllm-ascend-a2")
    held = e.apply(e.plan(SimpleNamespace(name="x.weight", shape=shape, scheme=q.scheme), CTX), q, CTX)
    want = tr.ascend_resolve_block_scales(*torch_pair(q), 128, 128, torch.bfloat16).float().numpy()
    assert np.array_equal(held.values.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize(
    "shape, outcome",
    [((256, 384), "exact"), ((64, 384), "exact"), ((192, 256), "wrong"), ((576, 576), "fails"), ((130, 129), "fails")],
)
def test_transformers_cpu_equals_fp8_dequantize(shape, outcome):
    """Against transformers' own Fp8Dequantize (the installed version), right blocks, inferred wrong
    blocks, and the shapes it refuses."""
    fp8 = pytest.importorskip("transformers.integrations.finegrained_fp8")
    q = adversarial(shape, seed=11 * shape[0] + shape[1])
    e = engines.get("transformers-cpu")
    step = e.plan(SimpleNamespace(name="x.weight", shape=shape, scheme=q.scheme), CTX)
    w, s = torch_pair(q)
    if outcome == "fails":
        assert step.action is Action.FAIL and "not divisible by scale grid" in step.why
        with pytest.raises(ValueError, match="not divisible by scale grid"):
            fp8.Fp8Dequantize(None)._dequantize_one(w, s, torch.bfloat16)
        return
    assert step.action is Action.DEQUANTIZE and ("WRONG" in step.why) == (outcome == "wrong")
    want = fp8.Fp8Dequantize(None)._dequantize_one(w, s, torch.bfloat16).float().numpy()
    held = e.apply(step, q, CTX)
    assert np.array_equal(held.values.view(np.uint32), want.view(np.uint32))
    right = tr.ascend_resolve_block_scales(w, s, 128, 128, torch.bfloat16).float().numpy()
    assert np.array_equal(held.values, right) == (outcome == "exact")


def test_q8_0_equals_gguf_quants():
    """Codes, float16 scales and values against gguf-py's Q8_0 on float32 data with ties at .5, zero
    blocks, tiny and huge blocks."""
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 256)) * np.exp(3 * rng.standard_normal((64, 1)))).astype(np.float32)
    x[0] = 0
    x[1, :32] = np.arange(32) - 15.5  # amax 15.5: x / d hits .5 ties
    x[2] *= np.float32(1e-30)
    x[3, ::32] = 127  # blocks whose codes are integers already
    raw = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0).reshape(-1, 34)
    codes, d = q8_0_blocks(x)
    assert np.array_equal(d.view(np.uint8), raw[:, :2]) and np.array_equal(codes.view(np.uint8), raw[:, 2:])
    want = gguf.quants.dequantize(raw.reshape(64, -1), gguf.GGMLQuantizationType.Q8_0)
    e = engines.get("gguf-q8_0")
    q = adversarial((64, 256), seed=1)
    held = e.apply(e.plan(SimpleNamespace(name="x.weight", shape=(64, 256), scheme=q.scheme), CTX), q, CTX)
    src = np.asarray(q.codes).astype(np.intp)
    fp32 = (V3.element.values[src] * np.repeat(np.repeat(q.scale_fp32, 128, 0), 128, 1)[:64, :256]).astype(np.float32)
    back = gguf.quants.dequantize(
        gguf.quants.quantize(fp32, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    )
    assert np.array_equal(held.values, back)
    assert np.array_equal(want[:1], np.zeros((1, 256), np.float32))

"""Which weights each engine changes when it loads them, decided from headers alone (what inspect says)."""

from types import SimpleNamespace

import pytest

from fp8port import engines
from fp8port.engines.base import Action, Context, Dense
from fp8port.errors import UnknownNameError
from fp8port.quant import get_preset

V3 = get_preset("deepseek-v3").weight
V31_E8M0 = get_preset("deepseek-v3.1").weight.with_(storage="e8m0")
MXFP8 = get_preset("mxfp8").weight
FP8 = Context(Dense.BFLOAT16, "llama", "fp8")


def plan(engine, shape, scheme=V3, ctx=FP8, name="model.layers.0.mlp.down_proj.weight"):
    return engines.get(engine).plan(SimpleNamespace(name=name, shape=shape, scheme=scheme), ctx)


@pytest.mark.parametrize("engine", ["vllm-sm100", "sglang-sm100"])
@pytest.mark.parametrize(
    "shape, action",
    [
        ((576, 1536), Action.REQUANTIZE),  # SmolLM2 down_proj: N % 64 and K % 128 hold
        ((576, 576), Action.KEEP),  # K = 576 is not a multiple of 128: CUTLASS / Triton, stored scales
        ((1536, 576), Action.KEEP),
        ((96, 1536), Action.KEEP),  # N % 64
        ((7168, 18432), Action.REQUANTIZE),
    ],
)
def test_deepgemm_requantizes_only_the_layers_it_runs(engine, shape, action):
    assert plan(engine, shape).action is action


def test_deepgemm_details():
    assert plan("vllm-sm100", (576, 1536), V31_E8M0).action is Action.KEEP  # already UE8M0 bytes
    qwen = Context(Dense.BFLOAT16, "qwen3_5_text", "fp8")
    assert plan("vllm-sm100", (576, 1536), ctx=qwen).action is Action.KEEP  # vLLM switched DeepGEMM off
    assert plan("sglang-sm100", (576, 1536), ctx=qwen).action is Action.REQUANTIZE
    assert plan("sglang-sm100", (576, 1536), V3.with_(block="64x64")).action is Action.KEEP
    ct = Context(Dense.BFLOAT16, "llama", "compressed-tensors")
    assert plan("vllm-sm100", (576, 1536), ctx=ct).action is Action.REQUANTIZE
    step = plan("sglang-sm100", (576, 1536), ctx=ct)
    assert step.action is Action.FAIL and "'compressed-tensors' is not modelled" in step.why
    assert plan("vllm-sm100", (576, 1536), MXFP8).action is Action.FAIL
    assert plan("vllm-sm100", (576, 1536)).scheme.scale_rule.value == "log2_ceil"
    assert plan("sglang-sm100", (576, 1536)).scheme.scale_rule.value == "ue8m0"


def test_vllm_ascend():
    step = plan("vllm-ascend-950", (576, 576))
    assert step.action is Action.REQUANTIZE and step.scheme == MXFP8.with_(name="vllm-ascend-950/weight")
    kv_b = plan("vllm-ascend-950", (512, 7168), name="model.layers.0.self_attn.kv_b_proj.weight")
    assert kv_b.action is Action.DEQUANTIZE and kv_b.dtype is Dense.BFLOAT16
    assert plan("vllm-ascend-950", (64, 100)).action is Action.DEQUANTIZE  # K % 32
    ascend_v1 = Context(Dense.BFLOAT16, "deepseek_v3", None)
    assert plan("vllm-ascend-950", (576, 576), MXFP8, ascend_v1).action is Action.KEEP
    assert plan("vllm-ascend-a2", (576, 576), MXFP8, ascend_v1).action is Action.FAIL
    assert plan("vllm-ascend-950", (576, 576), ctx=Context(Dense.BFLOAT16, "minimax_m3", "fp8")).action is Action.FAIL
    fp16 = plan("vllm-ascend-a2", (576, 576), ctx=Context(Dense.FLOAT16, "llama", "fp8"))
    assert fp16.action is Action.DEQUANTIZE and fp16.dtype is Dense.FLOAT16


def test_transformers_and_gguf():
    ct = Context(Dense.BFLOAT16, "llama", "compressed-tensors")
    step = plan("transformers-cpu", (576, 576), ctx=ct)  # compressed-tensors pads: no pitfall
    assert step.action is Action.DEQUANTIZE and step.reads_as is None
    assert plan("transformers-cpu", (576, 576)).action is Action.FAIL
    assert plan("gguf-q8_0", (576, 576)).dtype is Dense.FLOAT32
    assert plan("gguf-q8_0", (64, 100)).dtype is Dense.FLOAT16  # rows not a multiple of 32: F16


def test_context_from_config():
    assert Context.from_config(None) == Context()
    cfg = {
        "torch_dtype": "float16",
        "model_type": "x",
        "text_config": {"model_type": "qwen3_5_text"},
        "quantization_config": {"quant_method": "fp8"},
    }
    assert Context.from_config(cfg) == Context(Dense.FLOAT16, "qwen3_5_text", "fp8")
    assert Context.from_config({"dtype": "weird"}).dtype is Dense.BFLOAT16


def test_names_and_verdicts():
    assert [e.name for e in engines.parse_list("vllm_sm100, gguf-q8_0,vllm-sm100")] == ["vllm-sm100", "gguf-q8_0"]
    with pytest.raises(UnknownNameError, match="valid: gguf-q8_0"):
        engines.parse_list("vllm-h100")
    ws = [
        SimpleNamespace(name=f"{n}.weight", shape=s, scheme=V3)
        for n, s in [("a.q_proj", (576, 576)), ("a.down_proj", (576, 1536))]
    ]
    v = engines.verdicts(ws, FP8)
    assert v["vllm-sm100"] == {
        **v["vllm-sm100"],
        "loads": True,
        "transforms": True,
        "counts": {"keep": 1, "requantize": 1},
    }
    assert not v["transformers-cpu"]["loads"] and v["transformers-cpu"]["first_failure"].startswith("a.q_proj.weight")

"""The compressed-tensors microscale and ModelOpt NVFP4 layout modules against each layout's own tools,
on the first two layers of SmolLM2 (real BF16 weights):

* we read llm-compressor 0.14's NVFP4A16 / MXFP4A16 / MXFP8A16 / FP8_DYNAMIC folders as compressed-tensors
  dequantizes them, and ModelOpt 0.47's NVFP4 export as its NVFP4QTensor.dequantize does, bit for bit;
* `convert --preset ct-nvfp4 | ct-mxfp4 | ct-mxfp8` writes llm-compressor's tensors byte for byte, and its
  quantization_config but for `ignore` (the user's argument to llm-compressor; ours lists what stayed dense);
* ModelOpt's own dequantization reads our ModelOpt output as we do; our ModelOpt -> compressed-tensors
  conversion writes what compressed-tensors' own ModelOptNvfp4Converter writes, and compressed-tensors
  decompresses it as we do.
"""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from fp8port.checkpoint import Checkpoint, Options, layouts, run
from tests.peers import oracles
from tests.peers.oracles import bits_equal, load_numpy

pytestmark = pytest.mark.slow  # runs llm-compressor and ModelOpt in their venvs (cached per session)

BF16 = ml_dtypes.bfloat16
PRESETS = {"NVFP4A16": "ct-nvfp4", "MXFP4A16": "ct-mxfp4", "MXFP8A16": "ct-mxfp8"}


@pytest.fixture(scope="module")
def llmc(peer):
    peer("llmcompressor")
    return lambda scheme: oracles.llmcompressor(oracles.smollm2_layers(2), scheme)


@pytest.fixture(scope="module")
def modelopt(peer):
    peer("modelopt")
    return oracles.modelopt_nvfp4(oracles.smollm2_layers(2))


def _ours(folder, dtype="bfloat16") -> dict[str, np.ndarray]:
    ck = Checkpoint.open(folder)
    h, _ = layouts.detect(ck)
    return {n: h.values(ck, w, dtype) for n, w in h.weights(ck).items()}


@pytest.mark.parametrize("scheme", ["NVFP4A16", "MXFP4A16", "MXFP8A16", "FP8_DYNAMIC"])
def test_we_read_llmcompressor_output_as_compressed_tensors_does(llmc, scheme):
    folder = llmc(scheme)
    theirs, ours = load_numpy(folder / oracles.DEQUANT), _ours(folder)
    assert len(theirs) == 14 and ours.keys() == theirs.keys()
    assert [n for n in theirs if not bits_equal(ours[n], theirs[n])] == []


@pytest.mark.parametrize("scheme", sorted(PRESETS))
def test_convert_preset_equals_llmcompressor_byte_for_byte(llmc, scheme, tmp_path):
    theirs = llmc(scheme)
    run(oracles.smollm2_layers(2), tmp_path / "ours", Options(mode="convert", preset=PRESETS[scheme]), progress=None)
    a, b = load_numpy(tmp_path / "ours" / "model.safetensors"), load_numpy(theirs / "model.safetensors")
    assert a.keys() == b.keys() and [n for n in a if not bits_equal(a[n], b[n])] == []
    ca, cb = (json.loads((f / "config.json").read_text()) for f in (tmp_path / "ours", theirs))
    qa, qb = ca.pop("quantization_config"), cb.pop("quantization_config")
    assert {k for k in qa.keys() | qb.keys() if qa.get(k) != qb.get(k)} == {"ignore"}
    assert (qa["ignore"], qb["ignore"]) == (["lm_head"], ["lm_head", "model.embed_tokens", "re:.*norm.*"])
    group = qa["config_groups"][scheme]
    assert list(qa) == list(qb) and list(group["weights"]) == list(qb["config_groups"][scheme]["weights"])  # key order
    assert {k for k in ca.keys() | cb.keys() if ca.get(k) != cb.get(k)} <= {
        "transformers_version",
        "_name_or_path",
        "torch_dtype",
        "dtype",
    }


def test_we_read_the_modelopt_export_as_modelopt_dequantizes(modelopt):
    theirs, ours = load_numpy(modelopt / oracles.DEQUANT), _ours(modelopt)
    assert len(theirs) == 14 and ours.keys() == theirs.keys()
    assert [n for n in theirs if not bits_equal(ours[n], theirs[n])] == []  # code 8 -> +0 as ModelOpt


def test_modelopt_reads_what_we_write(llmc, modelopt, tmp_path):
    """llm-compressor's NVFP4A16 -> our ModelOpt (W4A16_NVFP4); ModelOpt's export -> compressed-tensors ->
    ModelOpt (NVFP4, input scales kept): ModelOpt's own dequantization of each equals ours."""
    run(llmc("NVFP4A16"), tmp_path / "a", Options(mode="convert", layout="modelopt"), progress=None, verify=True)
    run(modelopt, tmp_path / "ct", Options(mode="convert", layout="compressed-tensors"), progress=None, verify=True)
    run(tmp_path / "ct", tmp_path / "b", Options(mode="convert", layout="modelopt"), progress=None, verify=True)
    for f, algo in ((tmp_path / "a", "W4A16_NVFP4"), (tmp_path / "b", "NVFP4")):
        assert json.loads((f / "hf_quant_config.json").read_text())["quantization"]["quant_algo"] == algo
        theirs, ours = load_numpy(oracles.modelopt_dequantize(f, tmp_path / f"{f.name}.deq")), _ours(f)
        assert len(theirs) == 14 and [n for n in theirs if not bits_equal(ours[n], theirs[n])] == []
    # the input scales went through the reciprocal twice: fp32(1 / fp32(1 / x))
    src, back = Checkpoint.open(modelopt), Checkpoint.open(tmp_path / "b")
    for n in (n for n in src.tensors if n.endswith("input_scale")):
        assert back.read(n) == np.float32(1) / (np.float32(1) / src.read(n))


def test_modelopt_to_compressed_tensors_equals_its_own_converter(modelopt, tmp_path):
    """compressed-tensors 0.20's ModelOptNvfp4Converter (main venv) maps weight -> weight_packed,
    1 / weight_scale_2 -> weight_global_scale, 1 / input_scale -> input_global_scale: our conversion writes
    the same numbers (as [1] tensors, as llm-compressor writes them; its converter writes 0-d), and
    compressed-tensors decompresses ours as we read it."""
    converters = pytest.importorskip("compressed_tensors.entrypoints.convert.converters.modelopt_nvfp4")
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    res = run(
        modelopt, tmp_path / "ct", Options(mode="convert", layout="compressed-tensors"), progress=None, verify=True
    )
    assert res.summary["counts"]["reciprocal-tensor-scale"] == 14
    theirs = converters.ModelOptNvfp4Converter(ignore=["lm_head", "re:.*embed_tokens"], targets=["Linear"]).validate(
        load_file(modelopt / "model.safetensors")
    )
    ours = load_file(tmp_path / "ct" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for n, t in theirs.items():
        assert ours[n].numel() == t.numel() and torch.equal(
            ours[n].reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8)
        ), n
    qc = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert list(qc["config_groups"]) == ["NVFP4"]  # W4A4: the static input scales are kept
    assert qc["config_groups"]["NVFP4"]["input_activations"]["dynamic"] == "local"
    sd = AutoModelForCausalLM.from_pretrained(
        tmp_path / "ct", dtype=torch.bfloat16, quantization_config=CompressedTensorsConfig(dequantize=True)
    ).state_dict()
    for n, v in _ours(tmp_path / "ct").items():
        assert bits_equal(v, sd[n].view(torch.int16).numpy().view(BF16)), n

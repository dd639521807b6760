"""Run inside msModelSlim's own venv (tests/peers/venvs.py): its functions on our inputs.

    quant MODEL WORK          its CLI (`msmodelslim quant --device cpu`) once per WORK/<TYPE>.yaml into WORK/<TYPE>,
                              in one process (the tool's start-up, ~10 s, is paid once)
    rules OUT.npz             scale exponents / scales for every positive bf16 amax and a float32 sample;
                              element casts of every finite bf16 value at several scales
    dequant SAVED OUT.npz     its own dequantization of every quantized weight in an AscendV1 folder
    cases IN.npz OUT.npz      its weight quantizers (the classes `linear_quant` builds) on conform cases
                              ('<case>' -> float32 inputs), as an identify bundle

Nothing here imports fp8port: the test compares the arrays.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from msmodelslim.core.quant_service.modelslim_v1.save.utils.pack import pack_fp4_to_uint8
from msmodelslim.core.quantizer.base import AutoWeightQuantizer, QConfig
from msmodelslim.ir.api.impl.fp_quantization import calculate_fp8_qparam, fp8_dequantize
from msmodelslim.ir.api.impl.int_quantization import calculate_int_qparam, int_dequantize, int_quantize
from msmodelslim.ir.api.impl.mx_quantization import (
    calculate_mx_qparam,
    calculate_mxfp4_qparam,
    mxfp4_quantize,
    mxfp_per_block_dequantize,
    mxfp_per_block_quantize,
)
from msmodelslim.ir.qal.qbase import QDType, QParam, QScheme, QScope, QStorage
from safetensors.torch import load_file

BF16 = torch.bfloat16
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]  # pack_fp4_to_uint8's FLOAT_TO_E2M1
EXPS = (-127, -126, -100, -20, -9, -3, -1, 0, 1, 3, 8, 20, 100, 119)


def np32(t):
    return t.detach().float().numpy()


def all_bf16(finite_only=True):
    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    x = bits.view(BF16)
    return x[torch.isfinite(x)] if finite_only else x


def rules(out):
    res = {}
    amax_bf16 = torch.arange(0, 0x7F81, dtype=torch.int32).to(torch.int16).view(BF16)  # +0 .. +Inf
    rng = np.random.default_rng(0)
    b = np.concatenate(
        [
            np.arange(0, 0x7F800001, 4099, dtype=np.uint32),
            rng.integers(0, 0x7F800001, 100_000, dtype=np.uint32).astype(np.uint32),
        ]
    )
    amax_f32 = torch.from_numpy(b.view(np.float32).copy())
    for tag, amax in (("bf16", amax_bf16), ("f32", amax_f32)):
        res[f"{tag}/amax"] = np32(amax)
        for fn, lo, q, scope, name in (
            (calculate_int_qparam, -amax, QDType.INT8, QScope.PER_CHANNEL, "int8"),
            (calculate_int_qparam, -amax, QDType.INT4, QScope.PER_CHANNEL, "int4"),
            (calculate_mx_qparam, amax, QDType.MXFP8, QScope.PER_BLOCK, "mxfp8"),
            (calculate_mxfp4_qparam, amax, QDType.MXFP4, QScope.PER_BLOCK, "mxfp4"),
            (calculate_fp8_qparam, -amax, QDType.FP8_E4M3, QScope.PER_CHANNEL, "fp8"),
        ):
            res[f"{tag}/{name}"] = np32(fn(lo, amax, q, scope, True).ext["scale"])
    x = all_bf16()
    res["x"] = np32(x)
    for e in EXPS:  # element casts at one block scale 2^e (shared_exp is a bf16 tensor, as on a bf16 model)
        se = torch.tensor(float(e), dtype=BF16)
        p8 = QParam(QScheme(QScope.PER_BLOCK, QDType.MXFP8, True), ext={"scale": se})
        v = mxfp_per_block_quantize(QStorage(QDType.FLOAT, x.clone()), p8).value  # bf16 values, as the saver sees
        res[f"e4m3/{e}"] = v.cpu().to(torch.float8_e4m3fn).view(torch.uint8).numpy()
        p4 = QParam(QScheme(QScope.PER_BLOCK, QDType.MXFP4, True), ext={"scale": se})
        v = mxfp4_quantize(QStorage(QDType.FLOAT, x.clone()), p4).value
        res[f"e2m1/{e}"] = pack_fp4_to_uint8(v.reshape(1, -1)).numpy()
    for s in (1.0, 2.0**-7, 0.013671875, 3.0e-5, 117.0):  # bf16 scales
        st = torch.tensor([s], dtype=BF16)
        for q, name in ((QDType.INT8, "int8"), (QDType.INT4, "int4")):
            p = QParam(QScheme(QScope.PER_CHANNEL, q, True), ext={"scale": st, "offset": torch.zeros_like(st)})
            res[f"{name}/{s!r}"] = int_quantize(QStorage(QDType.FLOAT, x.clone()), p).value.numpy()
    np.savez(out, **res)


def _exps(scale_bytes):
    return (scale_bytes.to(torch.float32) - 127).to(BF16)  # the saver wrote shared_exp + 127


def _blocks(w):
    n, k = w.shape
    return w.reshape(n, k // 32, 32)


def dequant(saved, out):
    """Per quantized weight: msModelSlim's own dequantization, as its FakeQuantLinear.forward does it."""
    saved = Path(saved)
    desc = json.loads((saved / "quant_model_description.json").read_text())
    t = {}
    for f in saved.glob("*.safetensors"):
        t.update(load_file(str(f)))
    res = {}
    for name, kind in desc.items():
        if not name.endswith(".weight") or kind == "FLOAT":
            continue
        base = name[: -len(".weight")]
        w, s = t[name], t[base + ".weight_scale"]
        if kind in ("W8A16", "W8A8_DYNAMIC", "W4A8_DYNAMIC"):
            if kind == "W4A8_DYNAMIC":  # int4 pairs of rows (2i low nibble, 2i+1 high) in int8 [N/2, K]
                lo, hi = (w << 4) >> 4, w >> 4
                w = torch.stack([lo, hi], 1).reshape(-1, w.shape[1])
            p = QParam(
                QScheme(QScope.PER_CHANNEL, QDType.INT8, True), ext={"scale": s, "offset": t[base + ".weight_offset"]}
            )
            v = int_dequantize(QStorage(QDType.INT8, w), p).value
        elif kind == "W8A8_MXFP8":
            p = QParam(QScheme(QScope.PER_BLOCK, QDType.MXFP8, True), ext={"scale": _exps(s)[..., None]})
            v = mxfp_per_block_dequantize(QStorage(QDType.MXFP8, _blocks(w.to(BF16))), p).value.reshape(w.shape)
        elif kind in ("W4A4_MXFP4", "W4A8_MXFP"):  # its source's nibble table, low nibble first
            b = w.to(torch.int64)
            idx = torch.stack([b & 15, b >> 4], -1).reshape(w.shape[0], -1)
            vals = torch.tensor(E2M1, dtype=BF16)[idx & 7] * torch.where(idx >= 8, -1.0, 1.0).to(BF16)
            p = QParam(QScheme(QScope.PER_BLOCK, QDType.MXFP4, True), ext={"scale": _exps(s)[..., None]})
            v = mxfp_per_block_dequantize(QStorage(QDType.MXFP4, _blocks(vals)), p).value.reshape(vals.shape)
        elif kind == "WFP8AFP8_DYNAMIC":
            p = QParam(
                QScheme(QScope.PER_CHANNEL, QDType.FP8_E4M3, True),
                ext={"scale": s, "offset": t[base + ".weight_offset"]},
            )
            v = fp8_dequantize(QStorage(QDType.FP8_E4M3, w), p).value
        else:
            continue
        res[name] = np32(v)
    np.savez(out, **res)


_CFG = {  # preset -> the linear_quant weight config msModelSlim would run
    "msmodelslim-int8": ("per_channel", "int8"),
    "msmodelslim-int4": ("per_channel", "int4"),
    "msmodelslim-mxfp8": ("per_block", "mxfp8"),
    "msmodelslim-mxfp4": ("per_block", "mxfp4"),
    "msmodelslim-fp8": ("per_channel", "fp8_e4m3"),
}


def cases(bundle, out):
    """Conform cases '<case>/inputs' (float32: msModelSlim on a float32 model) through its quantizers."""
    res = {}
    with np.load(bundle) as z:
        for case in z.files:
            scope, dtype = _CFG[case.split("/")[1]]
            x = torch.from_numpy(z[case])
            wq = AutoWeightQuantizer.from_config(QConfig(dtype=dtype, scope=scope, symmetric=True, method="minmax"))
            wq.init_weight(QStorage(QDType.FLOAT, x))
            codes, param = wq.get_q_storage().value, wq.get_q_param().ext["scale"]
            if dtype == "mxfp8":
                res[case + "/codes"] = codes.to(torch.float8_e4m3fn).view(torch.uint8).numpy()
            elif dtype == "mxfp4":  # one E2M1 code per element: pack_fp4_to_uint8's rule, unpacked again
                flat = codes.reshape(1, -1)
                flat = torch.cat([flat, flat.new_zeros(1, flat.shape[1] % 2)], 1)
                packed = pack_fp4_to_uint8(flat).to(torch.int64)
                nib = torch.stack([packed & 15, packed >> 4], -1).reshape(-1)[: codes.numel()]
                res[case + "/codes"] = nib.reshape(codes.shape).to(torch.uint8).numpy()
            elif dtype == "fp8_e4m3":
                res[case + "/codes"] = codes.to(torch.float8_e4m3fn).view(torch.uint8).numpy()
            else:
                res[case + "/codes"] = codes.to(torch.int8).view(torch.uint8).numpy()
            if dtype.startswith("mx"):
                res[case + "/scales"] = (param.reshape(x.shape[0], -1) + 127).to(torch.uint8).numpy()
            else:  # per row; fp8port's INT elements count in 2^-mbits steps
                step = {"int8": 64.0, "int4": 4.0}.get(dtype, 1.0)
                res[case + "/scales"] = (param.float() * step).reshape(-1, 1).numpy()
            res[case + "/inputs"] = z[case]
    np.savez(out, **res)


def quant(model, work):
    from msmodelslim.cli.__main__ import main

    for cfg in sorted(Path(work).glob("*.yaml")):
        sys.argv = [
            "msmodelslim",
            "quant",
            "--model_type",
            "default",
            "--model_path",
            model,
            "--save_path",
            str(cfg.with_suffix("")),
            "--device",
            "cpu",
            "--config_path",
            str(cfg),
            "--trust_remote_code",
            "False",
        ]
        try:
            main()
        except SystemExit as e:
            if e.code:
                raise
        if not (cfg.with_suffix("") / "quant_model_description.json").is_file():
            sys.exit(f"msmodelslim wrote nothing for {cfg.name}")


if __name__ == "__main__":
    {"rules": rules, "dequant": dequant, "cases": cases, "quant": quant}[sys.argv[1]](*sys.argv[2:])

"""The Triton block-scaled FP8 GEMM against the per-K-block float32 reference and, as DeepGEMM's
tests do, against an fp32 GEMM of the unquantized operands with calc_diff < 1e-3.

Under the interpreter both kernel paths run: FP8_DOT (uint8 codes bitcast to float8e4nv, the
GPU path; the interpreter decodes the non-NaN E4M3 codes correctly) and the integer-decode path.
"""

from ._env import DEVICE  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)

import numpy as np
import pytest
import torch

pytest.importorskip("triton", reason="triton not installed: pip install triton==3.9.0")

import fp8port  # noqa: E402
from fp8port.errors import ShapeError, UnsupportedInputError  # noqa: E402
from fp8port.kernels import dispatch  # noqa: E402
from fp8port.nn import reference_scaled_matmul  # noqa: E402
from fp8port.quant import QuantizedTensor  # noqa: E402


def calc_diff(x, y):
    """DeepGEMM's similarity measure: 1 - 2 sum(xy) / sum(x^2 + y^2), in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return 1 - 2 * (x * y).sum() / (x * x + y * y).sum()


def _operands(m, n, k, seed=0, lead=()):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*lead, m, k)).astype(np.float32)
    x[..., 1, :] *= 50  # an outlier row: per-row activation scales must follow it
    w = (rng.standard_normal((n, k)) * np.exp2(rng.integers(-3, 3, (n, 1)))).astype(np.float32)
    a = fp8port.quantize(torch.from_numpy(x), "deepseek-v3.1", role="activation", backend="reference")
    b = fp8port.quantize(torch.from_numpy(w), "deepseek-v3.1", role="weight", backend="reference")
    return x, w, a, b


def _on_device(q):
    return QuantizedTensor(
        codes=q.codes.to(DEVICE),
        scale=q.scale.to(DEVICE),
        scale_fp32=q.scale_fp32.to(DEVICE),
        shape=q.shape,
        scheme=q.scheme,
        role=q.role,
        src_dtype=q.src_dtype,
        framework=q.framework,
    )


@pytest.mark.parametrize("fp8_dot", [True, False])
@pytest.mark.parametrize("m,n,k", [(70, 200, 300), (33, 130, 128), (16, 64, 520)])
def test_gemm_matches_reference(m, n, k, fp8_dot):
    x, w, a, b = _operands(m, n, k, seed=m + n + k)
    out = dispatch.scaled_matmul(_on_device(a), _on_device(b), fp8_dot=fp8_dot)
    assert out.shape == (m, n) and out.dtype == torch.float32 and out.device.type == DEVICE
    got = out.cpu().numpy()
    ref = reference_scaled_matmul(a, b)
    # same per-block products and scaling; only the summation order inside a block differs
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    assert calc_diff(got, ref) < 1e-9
    assert calc_diff(got, x @ w.T) < 1e-3


def test_gemm_bf16_out_and_leading_dims():
    x, w, a, b = _operands(40, 96, 256, seed=9, lead=(2,))
    out = dispatch.scaled_matmul(_on_device(a), _on_device(b), out_dtype="bfloat16")
    assert out.shape == (2, 40, 96) and out.dtype == torch.bfloat16
    ref32 = torch.from_numpy(reference_scaled_matmul(a, b))
    # one rounding to bf16 at the end: within half a bf16 ulp of the float32 result
    np.testing.assert_allclose(out.float().cpu().numpy(), ref32.numpy(), rtol=2**-8, atol=1e-6)
    assert calc_diff(out.float().cpu().numpy(), x @ w.T) < 1e-3


def test_gemm_kernel_quantized_on_device_end_to_end():
    """Quantize with the Triton kernels, multiply with the Triton GEMM."""
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.standard_normal((48, 384)).astype(np.float32)).to(DEVICE)
    w = torch.from_numpy(rng.standard_normal((160, 384)).astype(np.float32)).to(DEVICE)
    a = dispatch.quantize(x, "deepseek-v3.1", role="activation")
    b = dispatch.quantize(w, "deepseek-v3.1", role="weight")
    out = dispatch.scaled_matmul(a, b)
    assert calc_diff(out.cpu().numpy(), (x @ w.T).cpu().numpy()) < 1e-3


def test_gemm_rejects_what_it_cannot_run():
    _, _, a, b = _operands(16, 32, 128)
    mx = fp8port.quantize(torch.zeros(32, 128), "mxfp8", backend="reference")
    assert "1x128" in dispatch.gemm_unsupported_reason(_on_device(mx), _on_device(b))
    with pytest.raises(UnsupportedInputError, match="128x128"):
        dispatch.scaled_matmul(_on_device(a), _on_device(a))
    with pytest.raises(ShapeError):
        dispatch.scaled_matmul(_on_device(a), _on_device(b), out_dtype="float16")


@pytest.mark.gpu
@pytest.mark.parametrize("n,k", [(576, 7168), (7168, 2048), (24576, 1536)])
def test_gpu_deepseek_shapes(n, k):
    x, w, a, b = _operands(512, n, k, seed=n)
    out = dispatch.scaled_matmul(_on_device(a), _on_device(b), out_dtype="bfloat16")
    assert calc_diff(out.float().cpu().numpy(), x @ w.T) < 1e-3

"""Block-scaled FP8 GEMM with DeepSeek / DeepGEMM semantics (fp8_gemm_kernel, the NT layout):

    C[m, n] = sum_kb (sum_{k in kb} A[m, k] * B[n, k]) * sa[m, kb] * sb[n // 128, kb]

A: activation codes (M, K) uint8 E4M3 with 1x128 float32 scales (M, ceil(K/128));
B: weight codes (N, K) uint8 E4M3 with 128x128 float32 scales (ceil(N/128), ceil(K/128)).
Each 128-wide K step is one MMA whose fp32 result is scaled and added to an fp32 accumulator
(promotion per K block, as DeepGEMM). Output float32 or bfloat16 (RNE, integer rounding).

On a GPU the uint8 codes are bitcast (not converted) to float8e4nv and fed to `tl.dot`, which
lowers to FP8 wgmma on Hopper. The interpreter has no fp8 dot worth trusting, so with
FP8_DOT=False the kernel decodes the codes to float32 with integer operations and runs an
IEEE float32 `tl.dot`: same indexing, masking and scaling, exact products.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_quant import bf16_bits, e4m3_decode

SCALE_BLOCK = 128  # K granularity of both operands' scales and N granularity of B's


def hopper_configs():
    """Autotune space for H100 / H200: 128-wide K steps (the scale block), 64-128 tiles."""
    out = []
    # (BLOCK_M, BLOCK_N, warps, stages); 128x256x128 fp8 x3 stages = 144 KiB of shared memory
    for bm, bn, warps, stages in (
        (128, 128, 8, 3),
        (128, 128, 4, 4),
        (64, 128, 4, 4),
        (128, 64, 4, 4),
        (128, 256, 8, 3),
    ):
        out.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "GROUP_M": 8}, num_warps=warps, num_stages=stages))
    return out


@triton.jit
def gemm_kernel(
    a_ptr,
    as_ptr,
    b_ptr,
    bs_ptr,
    c_ptr,
    M,
    N,
    K,
    KB,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    GROUP_M: tl.constexpr,
    FP8_DOT: tl.constexpr,
    OUT_BF16: tl.constexpr,
):
    BLOCK_K: tl.constexpr = 128
    pid = tl.program_id(0)
    # grouped ordering: GROUP_M row-tiles share each B column-tile while it is in L2
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # out-of-range rows / columns wrap onto real ones (their results are never stored), so
    # only K needs a load mask
    rm = (offs_m % M).to(tl.int64)
    rn = (offs_n % N).to(tl.int64)
    a_ptrs = a_ptr + rm[:, None] * K + offs_k[None, :]
    b_ptrs = b_ptr + rn[:, None] * K + offs_k[None, :]
    as_ptrs = as_ptr + rm * KB
    bs_ptrs = bs_ptr + (rn // 128) * KB

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, KB):
        kmask = offs_k[None, :] < K - kb * BLOCK_K  # code 0 is +0.0: padding adds nothing
        a = tl.load(a_ptrs, mask=kmask, other=0)
        b = tl.load(b_ptrs, mask=kmask, other=0)
        if FP8_DOT:
            part = tl.dot(a.to(tl.float8e4nv, bitcast=True), tl.trans(b.to(tl.float8e4nv, bitcast=True)))
        else:
            part = tl.dot(e4m3_decode(a.to(tl.int32)), tl.trans(e4m3_decode(b.to(tl.int32))), input_precision="ieee")
        sa = tl.load(as_ptrs + kb)
        sb = tl.load(bs_ptrs + kb)
        acc += part * sa[:, None] * sb[None, :]
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K

    cmask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    c_off = offs_m[:, None].to(tl.int64) * N + offs_n[None, :]
    if OUT_BF16:
        tl.store(c_ptr + c_off, bf16_bits(acc), mask=cmask)
    else:
        tl.store(c_ptr + c_off, acc, mask=cmask)


gemm_kernel_tuned = triton.autotune(configs=hopper_configs(), key=["M", "N", "K"])(gemm_kernel)


def scaled_mm(
    a_codes,
    a_scale,
    b_codes,
    b_scale,
    *,
    out_bf16: bool,
    fp8_dot: bool | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
):
    """C = blockscaled(A) @ blockscaled(B).T for contiguous uint8 codes and float32 scales.

    fp8_dot: tl.dot on float8e4nv operands (default: on a CUDA device). block_m / block_n fix
    the tile (otherwise autotuned on CUDA, 32 x 32 elsewhere, i.e. under the interpreter).
    """
    import torch

    m, k = a_codes.shape
    n = b_codes.shape[0]
    kb = -(-k // SCALE_BLOCK)
    if a_scale.shape != (m, kb) or b_scale.shape != (-(-n // SCALE_BLOCK), kb) or b_codes.shape[1] != k:
        raise ValueError(
            f"scaled_mm: A {tuple(a_codes.shape)} scales {tuple(a_scale.shape)}, "
            f"B {tuple(b_codes.shape)} scales {tuple(b_scale.shape)} do not fit 1x128 / 128x128"
        )
    cuda = a_codes.device.type == "cuda"
    fp8_dot = cuda if fp8_dot is None else fp8_dot
    out = torch.empty((m, n), dtype=torch.bfloat16 if out_bf16 else torch.float32, device=a_codes.device)
    args = (
        a_codes.contiguous(),
        a_scale.float().contiguous(),
        b_codes.contiguous(),
        b_scale.float().contiguous(),
        out.view(torch.int16) if out_bf16 else out,
        m,
        n,
        k,
        kb,
    )
    if m == 0 or n == 0:
        return out
    if cuda and block_m is None and block_n is None:

        def grid(meta):
            return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

        gemm_kernel_tuned[grid](*args, FP8_DOT=fp8_dot, OUT_BF16=out_bf16)
    else:
        bm, bn = block_m or 32, block_n or 32
        grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
        gemm_kernel[grid](*args, BLOCK_M=bm, BLOCK_N=bn, GROUP_M=8, FP8_DOT=fp8_dot, OUT_BF16=out_bf16, num_warps=4)
    return out

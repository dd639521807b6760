"""A lean decode loop for Llama-shaped decoders (Llama, Mistral, Qwen2, SmolLM2) on the CPU.

transformers' `generate` spends most of a small model's token in Python: the DynamicCache, mask and
position bookkeeping, module calls and logits processors around ~210 linear calls. This loop runs the
same arithmetic with the loaded model's own modules and weights (FP8Linear layers as they are, the RMSNorm
weights, the rotary table from the model's rotary module, the lm_head), a KV cache allocated once per
call, and one prepared C call per fused projection on preallocated buffers.

Exactness: every step repeats transformers' ops in the same dtype and order (RMSNorm in float32 then the
weight in the model dtype, `q cos + rotate_half(q) sin`, SDPA with `enable_gqa`, residual adds, SiLU),
and the prefill calls the original projections, so greedy tokens equal `generate`'s. The decode step
merges q/k/v and gate/up into one FP8Linear each where that is exact (`merge`): at the step's one row
each output of the fused GEMV depends on its row's codes and scales only, so the merged call gives the
separate calls' bits (tests/nn/test_decode.py checks it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch.nn import functional as F

from ..errors import ShapeError, UnsupportedInputError
from ..quant.scheme import BlockKind, BlockShape
from . import fused
from .linear import FP8Linear, Mode

MODEL_TYPES = ("llama", "mistral", "qwen2")
# generation-config fields that add a logits processor the lean loop does not run: (name, neutral values)
_PROCESSORS = (
    ("repetition_penalty", (None, 1.0)),
    ("encoder_repetition_penalty", (None, 1.0)),
    ("no_repeat_ngram_size", (None, 0)),
    ("bad_words_ids", (None,)),
    ("suppress_tokens", (None,)),
    ("begin_suppress_tokens", (None,)),
    ("forced_bos_token_id", (None,)),
    ("forced_eos_token_id", (None,)),
    ("sequence_bias", (None,)),
    ("exponential_decay_length_penalty", (None,)),
    ("min_length", (None, 0)),
    ("min_new_tokens", (None, 0)),
    ("renormalize_logits", (None, False)),
)


def unsupported(model, length: int | None = None) -> str | None:
    """Why the lean loop cannot run this model (None where it can).

    Args:
        model: a transformers causal LM, as `load_quantized` or `from_pretrained` returns it.
        length: prompt plus new tokens, where known (a sliding window longer than it changes nothing).
    Returns:
        A one-line reason, or None.
    """
    cfg = getattr(model, "config", None)
    mt = getattr(cfg, "model_type", None)
    if mt not in MODEL_TYPES:
        return f"model_type {mt!r} is not Llama-shaped (the lean loop runs {', '.join(MODEL_TYPES)})"
    inner = getattr(model, "model", None)
    if getattr(model, "lm_head", None) is None or inner is None or not hasattr(inner, "layers"):
        return f"{type(model).__name__} has no model.layers / lm_head"
    if getattr(cfg, "hidden_act", None) not in ("silu", "swish"):
        return f"hidden_act {cfg.hidden_act!r} (the lean loop runs SiLU)"
    rope = getattr(inner.rotary_emb, "rope_type", "default")
    if "dynamic" in rope or "longrope" in rope:
        return f"rope_type {rope!r} changes its frequencies with the length"
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        return "sliding-window layers"
    window = getattr(cfg, "sliding_window", None) if mt == "mistral" else None
    if window and length is not None and length > window:
        return f"{length} positions exceed the sliding window of {window} (the lean loop attends to every position)"
    if getattr(cfg, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    impl = getattr(cfg, "_attn_implementation", "sdpa")
    if impl not in ("sdpa", "eager", None):
        return f"attention implementation {impl!r}"
    gc = getattr(model, "generation_config", None)
    for name, neutral in _PROCESSORS:
        v = getattr(gc, name, None)
        if v not in neutral:
            return f"generation_config.{name} = {v!r} needs a logits processor the lean loop does not run"
    p = next(model.parameters())
    if p.device.type != "cpu" or p.dtype not in (torch.bfloat16, torch.float32):
        return f"parameters in {p.dtype} on {p.device.type} (the lean loop runs bf16 / float32 on the CPU)"
    return None


def merge(layers: list) -> FP8Linear | None:
    """One weight-only FP8Linear computing the layers' outputs side by side, bit for bit, or None.

    The codes are stacked along N and the layers' own `codes` become views of the stack (no second
    copy). Tile blocks whose row extent does not divide every N boundary are re-gridded to the largest
    row extent that does (each scale repeated over the rows it covered): every element keeps its scale.

    Args:
        layers: FP8Linear modules with the same scheme, K, mode and packing.
    Bit for bit holds for the decode step's rows (float32 activations, and bf16 below fused.FOLD_ROWS /
    AMX_ROWS): from there bf16 rows may take a route that splits the scale grid by one NVFP4 tensor scale,
    which a merged grid of several layers lacks, so the merged and separate calls may round differently.

    Returns:
        The merged layer, or None where the merge would not be exact or the fused kernels do not run it.
    """
    if not all(isinstance(m, FP8Linear) for m in layers) or not fused.enabled():
        return None
    a = layers[0]
    same = all(
        m.scheme == a.scheme and m.in_features == a.in_features and m.packed == a.packed and m.mode is Mode.WEIGHT_ONLY
        for m in layers
    )
    if not same or len({m.bias is None for m in layers}) != 1 or a.codes.dtype != torch.uint8:
        return None
    block = a.scheme.block
    ns = [m.out_features for m in layers]
    if block.kind is BlockKind.TILE:
        bm, bn = block.size
        sub = math.gcd(bm, *ns[:-1])  # a row extent on every boundary between layers
        scheme = a.scheme if sub == bm else replace(a.scheme, block=BlockShape(BlockKind.TILE, (sub, bn)))
        rep = bm // sub
        scales = [m.scale_fp32.repeat_interleave(rep, 0)[: -(-n // sub)] for m, n in zip(layers, ns)]
    elif block.kind in (BlockKind.VECTOR, BlockKind.ROW) and block.axis in (-1, 1):
        scheme, scales = a.scheme, [m.scale_fp32 for m in layers]  # one scale row per output row
    else:
        return None
    codes = torch.cat([m.codes for m in layers])
    out = FP8Linear.__new__(FP8Linear)
    torch.nn.Module.__init__(out)
    out.out_features, out.in_features = sum(ns), a.in_features
    out.scheme, out.activation, out.mode, out.packed = scheme, None, Mode.WEIGHT_ONLY, a.packed
    out.register_buffer("codes", codes)
    out.register_buffer("scale_fp32", torch.cat(scales).contiguous())
    bias = None if a.bias is None else torch.cat([m.bias.detach() for m in layers])
    out.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)
    out._fw = None
    if out.fused_weight().g is None:
        return None
    row = 0
    for m, n in zip(layers, ns):  # the layers read the stack (same bytes): one copy of the codes
        m.codes = codes[row : row + n]
        m._fw = None
        row += n
    return out


class _Proj:
    """One projection of the decode step: the fused kernels' prepared plan called on the caller's
    buffers (one C call, no allocation), else the module itself."""

    def __init__(self, mod):
        self.mod, self.run = mod, None
        fw = mod.fused_weight() if isinstance(mod, FP8Linear) and mod.mode is Mode.WEIGHT_ONLY else None
        self.fw = fw if fw is not None and fw.g is not None and fused.enabled() else None

    def prepare(self, dtype: torch.dtype) -> None:
        """Read the plan's call arguments once per generate call (tier, threads, flags, bias)."""
        fw, self.run = self.fw, None
        if fw is None or not fw.runs(dtype) or not fused.enabled():
            return
        fw._refresh()
        if fw._tier < 0:
            return
        from ..cpu import gemm

        self._bias = fw._bias32(self.mod.bias)
        self.args = (
            fw._addr,
            (dtype is torch.bfloat16) | gemm._bf16_dot_on << 1,
            fw._tier,
            fw._threads[1],
            None if self._bias is None else self._bias.data_ptr(),
        )
        self.run = fw._run

    def __call__(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """x: one contiguous row; out: a contiguous buffer of the output width (used where the kernels run)."""
        if self.run is None:
            return self.mod(x)
        if not x.is_contiguous():
            x = x.contiguous()
        addr, flags, tier, threads, bias = self.args
        if self.run(addr, x.data_ptr(), out.data_ptr(), 1, flags, tier, threads, bias):
            raise MemoryError("fp8port: no memory for the activations of a fused linear layer")
        return out


@dataclass
class _Layer:
    ln1: torch.Tensor
    ln2: torch.Tensor
    eps1: float
    eps2: float
    q: object
    k: object
    v: object
    o: object
    gate: object
    up: object
    down: object
    qkv: _Proj | None = None  # merged projections for the decode step (merge), where exact
    gateup: _Proj | None = None
    oo: _Proj | None = None
    dd: _Proj | None = None


class _Screen:
    """Greedy's lm_head without reading all of it in bf16: a Q8_0 copy (int8 codes, 1x32 blocks; half the
    bytes, on the fused GEMV) gives every logit y_j within a bound B_j of the model's own logit l_j; only
    rows with y_j + B_j >= max_i (y_i - B_i) can hold the argmax, and those rows' logits are then computed
    by the lm_head's own op (F.linear on the rows: the same bits as the full call, tests/nn/test_decode.py).
    So the token is the full argmax's, ties to the lowest index included.

    B_j = 1.02 |x|_2 c_j + 2^-6 |y_j|, c_j = |w_j - q_j|_2 + (3K + 4) u (|w_j|_2 + |q_j|_2): the quantization
    error by Cauchy-Schwarz, both dot products' float32 reassociation (u = 2^-24), and the bf16 rounding
    of y_j and of l_j (2^-8 each, relative), with margin.
    """

    LIMIT = 4096  # more candidates than this: the full lm_head is as cheap

    def __init__(self, lm_head, dtype: torch.dtype):
        w = lm_head.weight.detach()
        self.w = w
        self.q = FP8Linear.from_linear(lm_head, "q8_0")
        wf = w.float()
        qf = self.q.dequantized_weight(torch.float32)
        k, u = w.shape[1], 2.0**-24
        self.c = ((wf - qf).norm(dim=1) + (3 * k + 4) * u * (wf.norm(dim=1) + qf.norm(dim=1))) * 1.02
        del wf, qf
        self.proj = _Proj(self.q)
        self.y = torch.empty(1, 1, w.shape[0], dtype=dtype)

    @classmethod
    def make(cls, lm_head, dtype):
        """A screen for this lm_head, or None where it does not apply (not a bf16 nn.Linear without bias,
        or the fused kernels do not run here)."""
        if type(lm_head) is not torch.nn.Linear or lm_head.bias is not None or dtype is not torch.bfloat16:
            return None
        if lm_head.weight.dtype is not torch.bfloat16 or not fused.enabled():
            return None
        s = cls(lm_head, dtype)
        return s if s.proj.fw is not None and s._rows_exact() else None

    def _rows_exact(self) -> bool:
        """Whether F.linear on a subset of the rows gives the full call's bits here (torch's CPU GEMV does
        on the machines tested; checked once on random rows, so another BLAS path turns the screen off)."""
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, self.w.shape[1], generator=g).to(self.w.dtype)
        full = F.linear(x, self.w)[0]
        for n in (1, 2, 3, 17, 256):
            idx = torch.randperm(self.w.shape[0], generator=g)[:n].sort().values
            if not torch.equal(F.linear(x, self.w.index_select(0, idx))[0], full[idx]):
                return False
        return True

    def argmax(self, x: torch.Tensor) -> int | None:
        """The greedy token for the final-normed row x, or None (then run the full lm_head)."""
        if self.proj.run is None:
            return None
        y = self.proj(x, self.y).view(-1).float()
        b = self.c * x.float().norm() + y.abs() * 2.0**-6
        lo = (y - b).max()
        if not torch.isfinite(lo):
            return None
        cand = torch.nonzero(y + b >= lo).view(-1)
        if cand.numel() > self.LIMIT:
            return None
        logits = F.linear(x.view(1, -1), self.w.index_select(0, cand))[0]
        return int(cand[logits.argmax()])


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """LlamaRMSNorm.forward's ops (float32 variance, then the weight times the input-dtype value)."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return torch.mul(w, h.to(x.dtype), out=out) if out is not None else w * h.to(x.dtype)


class LeanDecoder:
    """Prefill, then one token per step, for a Llama-shaped model (see the module docstring).

    Args:
        model: a transformers causal LM for which `unsupported(model)` is None.
        merge_projections: run q/k/v and gate/up as one fused call each in the decode step where exact.
        screen: greedy steps find the argmax through a Q8_0 copy of the lm_head (_Screen; about half the
            lm_head's bytes more in memory), the same token as the full lm_head's.
    """

    def __init__(self, model, merge_projections: bool = True, screen: bool = True):
        why = unsupported(model)
        if why:
            raise UnsupportedInputError(f"the lean decode loop cannot run this model: {why}")
        cfg, inner = model.config, model.model
        self.model, self.cfg = model, cfg
        self.nh, self.kvh = cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.nh
        self.scale = self.hd**-0.5
        self.embed, self.norm, self.lm_head = inner.embed_tokens, inner.norm, model.lm_head
        self.rotary = inner.rotary_emb
        self.dtype = self.embed.weight.dtype
        self.layers = []
        for lay in inner.layers:
            a, m = lay.self_attn, lay.mlp
            L = _Layer(
                lay.input_layernorm.weight,
                lay.post_attention_layernorm.weight,
                lay.input_layernorm.variance_epsilon,
                lay.post_attention_layernorm.variance_epsilon,
                a.q_proj,
                a.k_proj,
                a.v_proj,
                a.o_proj,
                m.gate_proj,
                m.up_proj,
                m.down_proj,
            )
            if merge_projections:
                qkv, gu = merge([a.q_proj, a.k_proj, a.v_proj]), merge([m.gate_proj, m.up_proj])
                L.qkv = None if qkv is None else _Proj(qkv)
                L.gateup = None if gu is None else _Proj(gu)
            L.oo, L.dd = _Proj(a.o_proj), _Proj(m.down_proj)
            self.layers.append(L)
        self._table = (0, None, None, None)
        self.screen = _Screen.make(self.lm_head, self.dtype) if screen else None

    def extra_bytes(self) -> int:
        """Bytes the decoder holds beyond the model's own weights: the lm_head screen's Q8_0 codes, scales
        and bound (the merged projections are views of the layers' codes, so they add nothing)."""
        if self.screen is None:
            return 0
        return self.screen.q.resident_bytes() + self.screen.c.numel() * self.screen.c.element_size()

    def _rope(self, n: int):
        """cos, sin (n, head_dim) for positions 0..n-1, from the model's rotary module (its own ops: the
        values transformers uses at each position), and sin with the first half negated (rotate_half)."""
        if self._table[0] < n:
            size = max(n, 256)
            x = torch.empty(1, 1, self.hd, dtype=self.dtype)
            cos, sin = self.rotary(x, torch.arange(size)[None])
            cos, sin = cos[0].contiguous(), sin[0].contiguous()
            sneg = sin.clone()
            sneg[:, : self.hd // 2].neg_()
            self._table = (size, cos, sin, sneg)
        return self._table[1], self._table[2], self._table[3]

    @torch.inference_mode()
    def generate(
        self,
        ids: torch.Tensor,
        max_new_tokens: int,
        *,
        stop_at_eos: bool = True,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        logits_out: list | None = None,
    ) -> torch.Tensor:
        """Greedy (temperature 0) or sampled continuation of one prompt.

        Args:
            ids: (1, P) or (P,) token ids.
            max_new_tokens: tokens to add at most.
            stop_at_eos: stop after the generation config's EOS token (kept, as generate keeps it).
            temperature, top_k, top_p, seed: sampling (temperature > 0); top_k 0 and top_p 1 keep every token.
            logits_out: where given, each step's float32 logits (V,) are appended (tests).
        Returns:
            (1, P + n) int64: the prompt and the n new tokens.
        """
        ids = torch.as_tensor(ids).reshape(1, -1).to(torch.int64)
        p = ids.shape[1]
        if p == 0:
            raise ShapeError("the lean decode loop needs at least one prompt token")
        total = p + max_new_tokens
        why = unsupported(self.model, total)
        if why:
            raise UnsupportedInputError(f"the lean decode loop cannot run this: {why}")
        cos, sin, sneg = self._rope(total)
        dt, kvh, hd = self.dtype, self.kvh, self.hd
        cache = torch.empty(len(self.layers), 2, 1, kvh, total, hd, dtype=dt)
        eos = self.model.generation_config.eos_token_id if stop_at_eos else None
        eos = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
        gen = None
        if temperature > 0:
            gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        out = torch.empty(total, dtype=torch.int64)
        out[:p] = ids[0]
        if max_new_tokens <= 0:
            return out[:p][None]
        self._prepare()
        screen = self.screen if gen is None and logits_out is None else None
        logits = self._prefill(ids, cache, cos[:p], sin[:p])
        n = p
        for step in range(max_new_tokens):
            if isinstance(logits, int):
                tok = logits
            else:
                lf = logits.to(torch.float32)
                if logits_out is not None:
                    logits_out.append(lf.clone())
                tok = int(lf.argmax()) if gen is None else _sample(lf, temperature, top_k, top_p, gen)
            out[n] = tok
            n += 1
            if tok in eos or step == max_new_tokens - 1:
                break
            logits = self._step(tok, n - 1, cache, cos[n - 1], sin[n - 1], sneg[n - 1], screen)
        return out[:n][None]

    def _prefill(self, ids, cache, cos, sin) -> torch.Tensor:
        """The prompt through the original modules (as transformers runs it); fills the cache; returns the
        last position's logits (V,)."""
        p, nh, kvh, hd = ids.shape[1], self.nh, self.kvh, self.hd
        h = self.embed(ids)
        c, s = cos[None, None], sin[None, None]
        for i, L in enumerate(self.layers):
            x = _rms(h, L.ln1, L.eps1)
            q = L.q(x).view(1, p, nh, hd).transpose(1, 2)
            k = L.k(x).view(1, p, kvh, hd).transpose(1, 2)
            v = L.v(x).view(1, p, kvh, hd).transpose(1, 2)
            q = q * c + _rotate_half(q) * s
            k = k * c + _rotate_half(k) * s
            kc, vc = cache[i, 0], cache[i, 1]
            kc[:, :, :p].copy_(k)
            vc[:, :, :p].copy_(v)
            a = F.scaled_dot_product_attention(
                q, kc[:, :, :p], vc[:, :, :p], scale=self.scale, is_causal=p > 1, enable_gqa=nh != kvh
            )
            h = h + L.o(a.transpose(1, 2).reshape(1, p, nh * hd))
            x = _rms(h, L.ln2, L.eps2)
            h = h + L.down(F.silu(L.gate(x)) * L.up(x))
        h = _rms(h[:, -1:], self.norm.weight, self.norm.variance_epsilon)
        return self.lm_head(h)[0, -1]

    def _step(self, tok: int, pos: int, cache, cos, sin, sneg, screen=None) -> torch.Tensor | int:
        """One token at position pos: the decode step's ops on preallocated rows; returns its logits (V,),
        or the greedy next token where a screen is given and finds it."""
        nh, kvh, hd = self.nh, self.kvh, self.hd
        bufs = self._b
        h, x, o = bufs["h"], bufs["x"], bufs["o"]
        torch.index_select(self.embed.weight, 0, torch.tensor([tok]), out=h.view(1, -1))
        half = hd // 2
        nq = nh * hd
        nk = kvh * hd
        for i, L in enumerate(self.layers):
            _rms(h, L.ln1, L.eps1, out=x)
            if L.qkv is not None:
                qkv = L.qkv(x, bufs["qkv"])
                qk, v = qkv[..., : nq + nk], qkv[..., nq + nk :]
            else:
                qk = torch.cat([L.q(x), L.k(x)], -1)
                v = L.v(x)
            qk = qk.view(nh + kvh, hd)
            # q cos + rotate_half(q) sin, rotate_half(q) sin = roll(q, half) * (sin with its first half negated)
            qk = qk * cos + torch.roll(qk, half, -1) * sneg
            kc, vc = cache[i, 0], cache[i, 1]
            kc[0, :, pos].copy_(qk[nh:])
            vc[0, :, pos].copy_(v.view(kvh, hd))
            a = F.scaled_dot_product_attention(
                qk[:nh].view(1, nh, 1, hd),
                kc[:, :, : pos + 1],
                vc[:, :, : pos + 1],
                scale=self.scale,
                enable_gqa=nh != kvh,
            )
            h.add_(L.oo(a.view(1, 1, nq), o))
            _rms(h, L.ln2, L.eps2, out=x)
            if L.gateup is not None:
                gu = L.gateup(x, bufs["gu"])
                inter = gu.shape[-1] // 2
                act = torch.mul(F.silu(gu[..., :inter]), gu[..., inter:], out=bufs["act"])
            else:
                act = F.silu(L.gate(x)) * L.up(x)
            h.add_(L.dd(act, o))
        _rms(h, self.norm.weight, self.norm.variance_epsilon, out=x)
        if screen is not None:
            tok = screen.argmax(x)
            if tok is not None:
                return tok
        return self.lm_head(x)[0, -1]

    def _prepare(self) -> None:
        """The decode step's rows (once) and each projection's call arguments (every generate call: the
        tier or thread count may have changed)."""
        if getattr(self, "_b", None) is None:
            dt, hid = self.dtype, self.cfg.hidden_size
            L = self.layers[0]
            widths = dict(h=hid, x=hid, o=hid)
            if L.qkv is not None:
                widths["qkv"] = L.qkv.mod.out_features
            if L.gateup is not None:
                widths["gu"] = L.gateup.mod.out_features
                widths["act"] = L.gateup.mod.out_features // 2
            self._b = {k: torch.empty(1, 1, w, dtype=dt) for k, w in widths.items()}
        for L in self.layers:
            for p in (L.qkv, L.gateup, L.oo, L.dd):
                if p is not None:
                    p.prepare(self.dtype)
        if self.screen is not None:
            self.screen.proj.prepare(self.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def _sample(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, gen: torch.Generator) -> int:
    """One token from softmax(logits / temperature), restricted to the top_k and the top_p mass."""
    lg = logits / temperature
    if top_k and top_k < lg.numel():
        kth = torch.topk(lg, top_k).values[-1]
        lg = lg.masked_fill(lg < kth, -math.inf)
    if top_p < 1.0:
        srt, idx = torch.sort(lg, descending=True)
        cum = torch.softmax(srt, -1).cumsum(-1)
        drop = cum - torch.softmax(srt, -1) > top_p  # keep the smallest prefix reaching top_p
        lg = lg.index_fill(0, idx[drop], -math.inf)
    return int(torch.multinomial(torch.softmax(lg, -1), 1, generator=gen))

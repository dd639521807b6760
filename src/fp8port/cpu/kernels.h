/* The kernels, written once in plain C for the compiler to vectorize; native.c includes this file
 * once per ISA tier (under a `#pragma GCC target`) with T(name) giving that tier's names.
 * Every loop over elements is branch-free: the per-element work is integer and float32
 * arithmetic on bit patterns (encode_one), so GCC turns it into AVX2 / AVX-512 / NEON code. */

/* Quantize prefetches the row its next amax pass reads into L2 (prefetcht1), not L1: an L1 prefetch
 * holds one of the few L1 miss buffers, and on SPR the loops stalled on them (1x128 and MX quantize
 * ran 0.80-0.87x a copy with this, 1.0x with prefetcht0; the L1 streamer takes it on from L2). */
#define PF_LOCALITY 2
/* Selects as masks: GCC turned some ternaries into branches for AVX2, which stopped vectorization. */
static inline uint32_t T(sel)(uint32_t mask, uint32_t a, uint32_t b) { return (a & mask) | (b & ~mask); }
static inline uint32_t T(lt)(uint32_t a, uint32_t b) { return 0u - (uint32_t)(a < b); }

/* Code of the float32 bit pattern u under an element format (enc_t in native.c). */
static inline uint32_t T(encode_one)(uint32_t u, const enc_t e)
{
    const uint32_t a = u & 0x7FFFFFFFu, neg = u >> 31, negm = 0u - neg;
    const int32_t fexp = (int32_t)(a >> 23);
    /* normal range: rebias the pattern and round away S mantissa bits (a carry moves the exponent) */
    const uint32_t v = a - (uint32_t)e.nrm_off;
    const uint32_t qn = (v + (uint32_t)e.rne * (e.half_n - 1 + ((v >> e.S) & 1)) + (uint32_t)e.away * e.half_n) >> e.S;
    /* subnormal (and fixed-point) range: the 24-bit significand shifted right by sh, rounded */
    const uint32_t sig = (a & 0x7FFFFFu) | ((uint32_t)(fexp != 0) << 23);
    int32_t sh = e.sub_base - fexp;
    sh = sh < 1 ? 1 : sh;
    sh = sh > 25 ? 25 : sh;
    const uint32_t half = 1u << (sh - 1);
    const uint32_t qs = (sig + (uint32_t)e.rne * (half - 1 + ((sig >> sh) & 1)) + (uint32_t)e.away * half) >> sh;
    const uint32_t q = T(sel)(0u - (uint32_t)(fexp >= e.nrm_fexp), qn, qs);
    /* sign: two's complement, or the sign bit (kept on a zero where the format has -0) */
    const uint32_t orsign = q | ((uint32_t)e.sign_bit & negm & (0u - (uint32_t)((q != 0) | e.zneg)));
    uint32_t c = T(sel)(0u - (uint32_t)e.twos, T(sel)(negm, (0u - q) & 0xFFu, q), orsign);
    const uint32_t maxq = T(sel)(negm, (uint32_t)e.maxq_neg, (uint32_t)e.maxq_pos);
    c = T(sel)(T(lt)(maxq, q), T(sel)(negm, (uint32_t)e.ovf_neg, (uint32_t)e.ovf_pos), c);
    const uint32_t nonfin = T(sel)(0u - (uint32_t)(a == 0x7F800000u), T(sel)(negm, (uint32_t)e.inf_neg, (uint32_t)e.inf_pos),
                                   T(sel)(negm, (uint32_t)e.nan_neg, (uint32_t)e.nan_pos));
    return T(sel)(0u - (uint32_t)(fexp == 255), nonfin, c);
}

/* 16-bit index of float32 bits u for a 65,536-entry code table: bf16 rounded to odd (a sticky
 * bit), which a format of at most 6 significand bits rounds exactly as it would round u. */
static inline uint32_t T(rto16)(uint32_t u) { return (u >> 16) | ((u & 0xFFFFu) != 0); }

static void T(encode_range)(const void *x, int32_t bf16, const enc_t e, const uint8_t *lut, uint8_t *restrict out,
                            int64_t i0, int64_t i1)
{
    const uint32_t *x32 = x;
    const uint16_t *x16 = x;
    if (lut && bf16)
        for (int64_t i = i0; i < i1; i++) out[i] = lut[x16[i]];
    else if (lut)
        for (int64_t i = i0; i < i1; i++) out[i] = lut[T(rto16)(x32[i])];
    else if (bf16)
        for (int64_t i = i0; i < i1; i++) out[i] = (uint8_t)T(encode_one)((uint32_t)x16[i] << 16, e);
    else
        for (int64_t i = i0; i < i1; i++) out[i] = (uint8_t)T(encode_one)(x32[i], e);
}

static void T(decode_range)(const uint8_t *restrict c, const float *restrict lut, float *restrict out, int64_t i0,
                            int64_t i1)
{
    for (int64_t i = i0; i < i1; i++) out[i] = lut[c[i]];
}

static uint32_t T(amax_rows)(const void *x, int32_t bf16, int64_t nr, int64_t stride, int64_t n)
{
    if (bf16) {
        const uint16_t *q = x;
        int16_t m = 0;  /* |x| of bf16 bits orders as a signed 16-bit integer */
        for (int64_t r = 0; r < nr; r++)
            for (int64_t k = 0; k < n; k++) {
                const int16_t v = (int16_t)(q[r * stride + k] & 0x7FFF);
                m = v > m ? v : m;
            }
        return (uint32_t)(uint16_t)m << 16;
    }
    const uint32_t *q = x;
    int32_t m = 0;
    for (int64_t r = 0; r < nr; r++)
        for (int64_t k = 0; k < n; k++) {
            const int32_t v = (int32_t)(q[r * stride + k] & 0x7FFFFFFFu);
            m = v > m ? v : m;
        }
    return (uint32_t)m;
}

/* The lean encoder for finite values, RNE, sign-bit formats (fast_t): normal codes by rebias and
 * round on the bits; below the smallest normal, float32 addition of 2^(23 + emin - M) rounds |y| to
 * the subnormal quantum (RNE) and leaves the code in the low bits. */
static inline uint32_t T(encode_fast)(uint32_t u, const fast_t f)
{
    const uint32_t a = u & 0x7FFFFFFFu;
    const uint32_t qn = (a + f.rnd_off + ((a >> f.S) & 1u)) >> f.S;
    const uint32_t qs = f2u(u2f(a) + f.magic) - f.magic_bits;
    uint32_t q = T(sel)(T(lt)(a, f.min_normal), qs, qn);
    q = T(sel)(T(lt)(f.maxq, q), f.ovf, q);
    return q | ((u >> 31) << f.sign_shift);
}

/* Codes of the blocks of a row strip (nr rows, stride xs / os) whose sel[j] is set: y = x * mul[j] (or
 * x / mul[j]) in float32, as the reference, then one of the two float32 encoders. One function per
 * input type, operation and encoder, so that each inner loop is plain and vectorizes. */
/* For each selected block j of a row strip and each of its nr rows: xr (input), o (codes), n (width),
 * m (the block's multiplier) for BODY. */
#define FOR_SPANS(XT, BODY)                                                                                 \
    for (int64_t j = 0; j < nb; j++) {                                                                      \
        if (!sel[j]) continue;                                                                              \
        const float m = mul[j];                                                                             \
        const int64_t n = (j + 1) * bn < N ? bn : N - j * bn;                                              \
        for (int64_t r = 0; r < nr; r++) {                                                                  \
            const XT *xr = x + r * xs + j * bn;                                                             \
            uint8_t *o = out + r * os + j * bn;                                                             \
            __builtin_prefetch(pf + r * xs + j * bn);                                                       \
            BODY                                                                                            \
        }                                                                                                   \
    }
#define SPAN_ARGS(XT, P)                                                                                    \
    (const XT *restrict x, int64_t xs, int64_t nr, int64_t nb, int64_t bn, int64_t N, const float *mul,     \
     const uint8_t *sel, const P p, uint8_t *restrict out, int64_t os, const XT *pf)
#define SPAN_FN(NAME, XT, LOAD, OP, P, ENC)                                                                 \
    static __attribute__((noinline)) void T(NAME) SPAN_ARGS(XT, P)                                          \
    {                                                                                                       \
        FOR_SPANS(XT, for (int64_t k = 0; k < n; k++) o[k] = (uint8_t)T(ENC)(f2u(u2f(LOAD) OP m), p);)     \
    }
SPAN_FN(gen_mul16, uint16_t, (uint32_t)xr[k] << 16, *, enc_t, encode_one)
SPAN_FN(gen_div16, uint16_t, (uint32_t)xr[k] << 16, /, enc_t, encode_one)
SPAN_FN(gen_mul32, uint32_t, xr[k], *, enc_t, encode_one)
SPAN_FN(gen_div32, uint32_t, xr[k], /, enc_t, encode_one)
#undef SPAN_FN

/* The lean encoder on explicit vectors of float32 lanes (one vector per 16-wide NVFP4 block on
 * AVX-512; GCC's own vectorization of SPAN_FN takes 64 elements a step there). */
typedef uint32_t T(lv32) __attribute__((vector_size(VBYTES)));
typedef int32_t T(ls32) __attribute__((vector_size(VBYTES)));
typedef float T(lvf) __attribute__((vector_size(VBYTES)));
typedef uint16_t T(lv16) __attribute__((vector_size(VBYTES / 2)));
typedef uint8_t T(lv8) __attribute__((vector_size(VBYTES / 4)));
/* capped (a constant at the call): the overflow code is maxq or maxq + 1, so an unsigned min caps q */
static inline __attribute__((always_inline)) T(lv32) T(encode_fast_v)(T(lv32) u, const fast_t f, int capped)
{
    typedef T(lv32) V;
    const V a = u & 0x7FFFFFFFu;
    const V qn = (a + f.rnd_off + ((a >> f.S) & 1u)) >> f.S;
    const V qs = (V)((T(lvf))a + f.magic) - f.magic_bits;
    const V sub = (V)((T(ls32))a < (int32_t)f.min_normal); /* signed compares: a < 2^31, q small */
    V q = (sub & qs) | (~sub & qn);
    if (capped) {
        q = MINU32(q, (V){0} + f.ovf);
    } else {
        const V over = (V)((T(ls32))q > (int32_t)f.maxq);
        q = (over & f.ovf) | (~over & q);
    }
    return q | ((u >> 31) << f.sign_shift);
}
#define LEAN_FN(NAME, XT, WIDEN, OP)                                                                        \
    static __attribute__((noinline)) void T(NAME) SPAN_ARGS(XT, fast_t)                                     \
    {                                                                                                       \
        const int64_t lanes = VBYTES / 4;                                                                   \
        FOR_SPANS(XT, int64_t k = 0;                                                                        \
                  for (; k + lanes <= n; k += lanes) {                                                      \
                      T(lv32) u;                                                                            \
                      WIDEN(u, xr + k);                                                                     \
                      const T(lvf) y = (T(lvf))u OP m;                                                      \
                      const T(lv8) c = __builtin_convertvector(T(encode_fast_v)((T(lv32))y, p, 0), T(lv8));   \
                      memcpy(o + k, &c, sizeof c);                                                          \
                  }                                                                                         \
                  for (; k < n; k++) {                                                                      \
                      const uint32_t u = sizeof(XT) == 2 ? (uint32_t)xr[k] << 16 : (uint32_t)xr[k];         \
                      o[k] = (uint8_t)T(encode_fast)(f2u(u2f(u) OP m), p);                                  \
                  })                                                                                        \
    }
#define WIDEN32(u, p) memcpy(&(u), (p), sizeof(u))
LEAN_FN(lean_mul16, uint16_t, WIDEN_BF16, *)
LEAN_FN(lean_div16, uint16_t, WIDEN_BF16, /)
LEAN_FN(lean_mul32, uint32_t, WIDEN32, *)
LEAN_FN(lean_div32, uint32_t, WIDEN32, /)
#undef LEAN_FN
#undef FOR_SPANS
#undef SPAN_ARGS

/* NVFP4's block scales of one row of blocks, vectorized over the blocks: the E4M3 code of
 * clamp(fp32(amax / max) / p, 2^-6, 448), s = p * s_blk, and the element multiplier
 * fp32(fp32(1 / p) / s_blk). Blocks are finite here (checked by the caller). The clamped value is a
 * normal E4M3 number, so under RNE its code is the rebias-and-round of the normal range alone.
 * Under RNE the two divisions before the code are two multiplications, by fp32(1 / max) and fp32(1 / p)
 * (about 3 ulps from the quotients; the clamp and the rounding to E4M3 are monotone and continuous in
 * the code, so the code can differ only where the value lies within a few ulps of a rounding midpoint
 * of E4M3); a block within NEAR ulps of one, or whose amax / max may be subnormal, is redone with the
 * reference's divisions. Returns 1 where some block's amax * multiplier is not finite (the lean
 * encoder needs it finite). */
#define NVFP4_NEAR 32u
#define NVFP4_SCALE_OUT(j, CODE)                                                                           \
    do {                                                                                                    \
        bs = bs < 0.015625f ? 0.015625f : bs;                                                               \
        bs = bs > 448.0f ? 448.0f : bs;                                                                     \
        const uint32_t b = f2u(bs), c = CODE;                                                               \
        const float sblk = u2f(((((c >> 3) & 15u) + 120u) << 23) | ((c & 7u) << 20)); /* a normal E4M3 value */ \
        code[j] = (uint8_t)c;                                                                               \
        sg[j] = p * sblk;                                                                                   \
        mul[j] = inv_p / sblk;                                                                              \
        bad |= (f2u(u2f(a[j]) * mul[j]) & 0x7FFFFFFFu) >= 0x7F800000u;                                      \
    } while (0)
static __attribute__((noinline)) int T(nvfp4_scales)(const uint32_t *restrict a, int64_t nb, const quant_t *Q,
                                                     uint8_t *restrict code, float *restrict sg, float *restrict mul)
{
    const float maxv = Q->maxv, p = Q->p, inv_p = 1.0f / Q->p, inv_max = 1.0f / Q->maxv;
    const enc_t e4 = Q->e4m3;
    const uint32_t off = (uint32_t)e4.nrm_off - (e4.half_n - 1), S = (uint32_t)e4.S;
    uint32_t bad = 0;
#define RNE_CODE ((b - off + ((b >> S) & 1u)) >> S)
    if (!e4.rne) {
        for (int64_t j = 0; j < nb; j++) {
            float bs = (u2f(a[j]) / maxv) / p;
            NVFP4_SCALE_OUT(j, T(encode_one)(b, e4));
        }
        return bad != 0;
    }
    /* inv_p and inv_max normal: the products stay within a few ulps wherever amax / max is normal */
    const uint32_t fp = f2u(inv_p) >> 23, fm = f2u(inv_max) >> 23;
    const uint32_t mask = (1u << S) - 1u, lo = e4.half_n - NVFP4_NEAR;
    uint32_t near = fp == 0 || fp == 255 || fm == 0 || fm == 255;
    if (!near)
        for (int64_t j = 0; j < nb; j++) {
            float bs = (u2f(a[j]) * inv_max) * inv_p;
            near |= ((f2u(bs) & mask) - lo < 2u * NVFP4_NEAR) | (a[j] < 0x03800000u); /* near a midpoint; tiny amax */
            NVFP4_SCALE_OUT(j, RNE_CODE);
        }
    if (near) { /* the reference's divisions where the products could round to another code (rare) */
        bad = 0;
        for (int64_t j = 0; j < nb; j++) {
            float bs = (u2f(a[j]) / maxv) / p;
            NVFP4_SCALE_OUT(j, RNE_CODE);
        }
    }
#undef RNE_CODE
    return bad != 0;
}
#undef NVFP4_SCALE_OUT
#undef NVFP4_NEAR

/* Block amaxes of 8 blocks of bn bf16 at x (bn a multiple of 16; |x| bits as signed 16-bit lanes, the
 * vectors of a block first folded into one): three rounds of interleaving pairs of vectors and a max
 * halve the lanes per block and double the blocks per vector, a fold of the two 128-bit halves ends
 * with one lane per block. */
typedef int16_t T(h16) __attribute__((vector_size(32)));
typedef int16_t T(h8) __attribute__((vector_size(16)));
typedef uint32_t T(h32) __attribute__((vector_size(64)));
#define MAXS(a, b) ({ __typeof__(a) ms_a = (a), ms_b = (b), ms_gt = (__typeof__(a))(ms_a > ms_b); \
                      (ms_gt & ms_a) | (~ms_gt & ms_b); })
#define ILV16(a, b, lo) __builtin_shufflevector(a, b, lo, 16 + lo, lo + 1, 17 + lo, lo + 2, 18 + lo, lo + 3, 19 + lo, \
                                               lo + 8, 24 + lo, lo + 9, 25 + lo, lo + 10, 26 + lo, lo + 11, 27 + lo)
#define ILV32(a, b, lo) __builtin_shufflevector(a, b, lo, lo + 1, 16 + lo, 17 + lo, lo + 2, lo + 3, 18 + lo, 19 + lo, \
                                               lo + 8, lo + 9, 24 + lo, 25 + lo, lo + 10, lo + 11, 26 + lo, 27 + lo)
#define ILV64(a, b, lo) __builtin_shufflevector(a, b, lo, lo + 1, lo + 2, lo + 3, 16 + lo, 17 + lo, 18 + lo, 19 + lo, \
                                               lo + 8, lo + 9, lo + 10, lo + 11, 24 + lo, 25 + lo, 26 + lo, 27 + lo)
#define LOAD_ABS16(k) ({                                                                                  \
    T(h16) ld, l2;                                                                                          \
    memcpy(&ld, x + bn * (k), sizeof ld);                                                                   \
    for (int64_t i = 16; i < bn; i += 16) {                                                                 \
        memcpy(&l2, x + bn * (k) + i, sizeof l2);                                                           \
        ld = MAXS(ld & 0x7FFF, l2 & 0x7FFF);                                                                \
    }                                                                                                       \
    ld & 0x7FFF;                                                                                            \
})
#define PAIR16(k) ({ const T(h16) p0 = LOAD_ABS16(k), p1 = LOAD_ABS16(k + 1); MAXS(ILV16(p0, p1, 0), ILV16(p0, p1, 4)); })
static inline __attribute__((always_inline)) T(h8) T(amax8_h16v)(const uint16_t *x, int64_t bn)
{
    const T(h16) q0 = PAIR16(0), q1 = PAIR16(2), q2 = PAIR16(4), q3 = PAIR16(6);
    const T(h16) r0 = MAXS(ILV32(q0, q1, 0), ILV32(q0, q1, 4)), r1 = MAXS(ILV32(q2, q3, 0), ILV32(q2, q3, 4));
    const T(h16) s0 = MAXS(ILV64(r0, r1, 0), ILV64(r0, r1, 4));
    return MAXS(__builtin_shufflevector(s0, s0, 0, 1, 2, 3, 4, 5, 6, 7),
                __builtin_shufflevector(s0, s0, 8, 9, 10, 11, 12, 13, 14, 15)); /* lane l: block l's bf16 bits */
}
static inline __attribute__((always_inline)) void T(amax8_h16)(const uint16_t *x, int64_t bn, uint32_t *a)
{
    const T(h8) m = T(amax8_h16v)(x, bn);
    for (int l = 0; l < 8; l++) a[l] = (uint32_t)(uint16_t)m[l] << 16; /* lane l: block l */
}
#undef ILV16
#undef ILV32
#undef ILV64
#undef LOAD_ABS16
#undef PAIR16
/* max of the 16 lanes of one block of float32 |x| bits (a halving tree) */
static inline uint32_t T(hmax_h32)(T(h32) v)
{
    v = MAXU_ANY(v, __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
    v = MAXU_ANY(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3));
    v = MAXU_ANY(v, __builtin_shufflevector(v, v, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1));
    return v[0] > v[1] ? v[0] : v[1];
}
/* NVFP4 (mode 2, 1 x 16 blocks, N a multiple of VBYTES and of 128) in one pass over a row while it is
 * in L1: the block amaxes, the row's block scales at once (nvfp4_scales), then y = x * mul in float32
 * and the lean encoder (capped), four vectors packed to bytes per step, prefetching the row at pf (the
 * next one read): the general path's arithmetic without its per-block calls. Returns 1 where a scaled
 * value could be non-finite (the row then takes the general path). */
#define NVFP4_ROW(W, ELT, WIDEN, CELLS, AMAX)                                                                   \
    static __attribute__((noinline)) int T(nvfp4_row##W)(const quant_t *Q, const ELT *restrict x, uint8_t *restrict o, \
                                                         int64_t g0, uint32_t *restrict a, float *restrict mul,  \
                                                         const ELT *pf)                                             \
    {                                                                                                       \
        const int64_t N = Q->N, gn = N / 16, lanes = VBYTES / 4;                                            \
        const int32_t stream = Q->stream;                                                                   \
        (void)stream; /* the baseline tier stores plainly */                                                \
        const fast_t f = Q->fast;                                                                           \
        AMAX                                                                                                \
        if (T(nvfp4_scales)(a, gn, Q, Q->stored + g0, Q->sgrid + g0, mul)) return 1;                        \
        if (CELLS) return 0;                                                                                \
        for (int64_t i = 0; i < N; i += VBYTES) {                                                           \
            T(lv32) c[4];                                                                                   \
            for (int b = 0; b < (int)(VBYTES * sizeof(ELT)); b += 64) __builtin_prefetch((const char *)(pf + i) + b); \
            for (int u = 0; u < 4; u++) {                                                                   \
                T(lv32) w;                                                                                  \
                WIDEN(w, x + i + u * lanes);                                                                \
                const T(lvf) y = (T(lvf))w * mul[(i + u * lanes) >> 4];                                     \
                c[u] = T(encode_fast_v)((T(lv32))y, f, 1);                                                  \
            }                                                                                               \
            const T(bytes) bv = PACK32(c);                                                                  \
            STORE_OUT(o + i, bv, stream);                                                                   \
        }                                                                                                   \
        return 0;                                                                                           \
    }
/* Power-of-two blocks of sign-bit float formats, rounded to nearest even (pow2_t): the scaled value
 * x * 2^-E is never formed; the codes come from integer operations on |x|'s bits, in 16-bit lanes for
 * bf16 input (mb = 7 mantissa bits) and 32-bit lanes for float32 (mb = 23). Two encoders:
 *   - shift: one saturating subtraction of k = (E + 127 - bias) << mb both divides by 2^E and
 *     rebiases to the format; the normal codes are that pattern rounded right by mb - M bits (a carry
 *     moves the exponent), capped at the overflow code. Lanes below the format's normal range take a
 *     rounded variable shift of the significand, out of line, only where a vector holds one (rare
 *     for FP8). Needs E >= bias + M - 126 (then a subnormal input lands below every half step).
 *   - thresholds (formats of at most 7 magnitudes above zero, FP4): the code is the number of
 *     thresholds |x| reaches. thr[i] (codec/native.py, from the reference encoder) is the smallest
 *     pattern that codes to i + 1 or more, kept relative to 2^(E + z): one saturating subtraction of
 *     (E + z) << mb from |x| and seven compares give the code, subnormal range included. Needs
 *     0 <= E + z <= 254.
 * The block's scale comes from the rule's step table (step_scale) over an integer amax of the bits.
 * SUBS (saturating subtract), MINU (unsigned min) and PACK (code vectors to one vector of bytes) are
 * this tier's instructions (native.c). */
/* (mant + half - 1 + lsb) >> sh per lane, rounding to nearest even. AVX2 and SSE2 have no 16-bit
 * variable shifts (GCC emulates them lane by lane): there 16-bit lanes are widened to 32 bits. */
#define SUBNORMAL_EXACT(V, mant, sh) (((mant) + (((V){0} + 1) << ((sh) - 1)) - 1 + (((mant) >> (sh)) & 1)) >> (sh))
#if VBYTES == 64 || !defined(__x86_64__)
#define SUBNORMAL_16(V, mant, sh) SUBNORMAL_EXACT(V, mant, sh)
#else
typedef uint32_t T(wide32) __attribute__((vector_size(2 * VBYTES)));
#define SUBNORMAL_16(V, mant, sh)                                                                         \
    __builtin_convertvector(SUBNORMAL_EXACT(T(wide32), __builtin_convertvector(mant, T(wide32)),          \
                                            __builtin_convertvector(sh, T(wide32))), V)
#endif
typedef uint8_t T(bytes) __attribute__((vector_size(VBYTES)));
/* the block amaxes of a bf16 row: from the first pass where it kept them (bf16 bits in the first half of
 * the row's scale grid; not on the baseline tier, which the aarch64 replay of recorded calls runs
 * without that pass), else eight blocks at a time */
#if VBYTES > 16
#define NVFP4_GIVEN(a, g0, gn) ({                                                                           \
    const uint16_t *g16 = (const uint16_t *)(Q->sgrid + (g0));                                              \
    if (Q->amax_given)                                                                                      \
        for (int64_t j = 0; j < (gn); j++) a[j] = (uint32_t)g16[j] << 16;                                   \
    Q->amax_given;                                                                                          \
})
#else
#define NVFP4_GIVEN(a, g0, gn) 0
#endif
NVFP4_ROW(16, uint16_t, WIDEN_BF16, NVFP4_CELLS(Q, x, o, a, mul, pf),
          if (!NVFP4_GIVEN(a, g0, gn)) for (int64_t j = 0; j < gn; j += 8) T(amax8_h16)(x + 16 * j, 16, a + j);)
#undef NVFP4_GIVEN
NVFP4_ROW(32, uint32_t, WIDEN32, 0, for (int64_t j = 0; j < gn; j++) {                                   \
    T(h32) v;                                                                                           \
    memcpy(&v, x + 16 * j, sizeof v);                                                                   \
    a[j] = T(hmax_h32)(v & 0x7FFFFFFFu);                                                                \
})
#undef MAXS
#undef NVFP4_ROW

/* NVFP4's first pass over rows [r0, r1) of bf16 (fp8_nvfp4_amax): the block amaxes into the scale grid,
 * as bf16 bits in the first half of each row's slot (half the bytes of float32 bits: this pass is bound
 * by memory), and their max as float32 bits. */
static uint32_t T(nvfp4_amax_rows)(const quant_t *Q, int64_t r0, int64_t r1)
{
    const int64_t N = Q->N, gn = N / 16;
    uint16_t m = 0;
    for (int64_t r = r0; r < r1; r++) {
        const uint16_t *x = (const uint16_t *)Q->x + r * N;
        uint16_t *a = (uint16_t *)(Q->sgrid + r * gn);
        for (int64_t j = 0; j < gn; j += 8) {
            const T(h8) v = T(amax8_h16v)(x + 16 * j, 16);
            memcpy(a + j, &v, sizeof v);
        }
        for (int64_t j = 0; j < gn; j++) m = a[j] > m ? a[j] : m;
    }
    return (uint32_t)m << 16;
}
#undef WIDEN32

/* Scales of nb blocks (amax bits a[j], float32 position) of a row group under a power-of-two step rule:
 * sgrid, stored bytes and E[j] (NO_POW2 where the scale is fine but outside the power-of-two path).
 * Where the rule is affine on the amax's exponent field (quant_t aff: E = f + d + (mantissa >= t)
 * for f in [flo, fhi], read off its step table in quant/steps.py), a vector of blocks at a time;
 * the rest, and every other rule, by the step table. Returns 1 where a block is non-finite or its
 * scale unusable (the group goes to the general kernel). */
typedef uint32_t T(u32v) __attribute__((vector_size(VBYTES)));
typedef int32_t T(i32v) __attribute__((vector_size(VBYTES)));
typedef uint8_t T(u8q) __attribute__((vector_size(VBYTES / 4)));
static int T(pow2_scales)(const quant_t *Q, const uint32_t *a, int64_t nb, int64_t g0, int32_t *E)
{
    const pow2_t *P = &Q->pow2;
    int64_t j = 0;
    if (Q->aff) {
        typedef T(i32v) I;
        const int32_t elo = P->nthr ? -P->z : P->bias + P->M - 126, ehi = P->nthr ? 254 - P->z : 127;
        const int lanes = VBYTES / 4;
        for (; j + lanes <= nb; j += lanes) {
            I v;
            memcpy(&v, a + j, sizeof v);
            const I f = (I)((T(u32v))v >> 23), e = f + Q->aff_d - (I)((v & 0x7FFFFF) >= (int32_t)Q->aff_t);
            const I ok = (f >= Q->aff_flo) & (f <= Q->aff_fhi) & (e >= elo) & (e <= ehi);
            if (ANY(~ok)) break; /* the rest block by block */
            memcpy(E + j, &e, sizeof e);
            const I sb = (e + 127) << 23;
            memcpy(Q->sgrid + g0 + j, &sb, sizeof sb);
            if (Q->stored_kind == 1) {
                const T(u8q) st = __builtin_convertvector(e + 127, T(u8q));
                memcpy(Q->stored + g0 + j, &st, sizeof st);
            }
        }
    }
    for (; j < nb; j++) {
        if (a[j] >= 0x7F800000u) return 1;
        const uint32_t sb = step_scale(Q->steps, a[j]);
        const float s = u2f(sb);
        if (!(s > 0.0f) || sb >= 0x7F800000u) return 1;
        Q->sgrid[g0 + j] = s;
        if (Q->stored_kind == 1) Q->stored[g0 + j] = (uint8_t)(sb >> 23);
        const int32_t e = (int32_t)(sb >> 23) - 127;
        E[j] = sb >= 0x00800000u && !(sb & 0x7FFFFFu) && pow2_ok(P, e, a[j]) ? e : NO_POW2;
    }
    return 0;
}

#define POW2_PATH(W, ELT, STYPE, MB, SUBNORMAL, SUBS, MINU, MAXU, PACK, NV)                                    \
    typedef ELT T(v##W) __attribute__((vector_size(VBYTES)));                                              \
    typedef STYPE T(s##W) __attribute__((vector_size(VBYTES)));                                            \
    typedef uint8_t T(b##W) __attribute__((vector_size(VBYTES / sizeof(ELT))));                            \
    /* Constants of one call, in registers for the loops below. */                                         \
    typedef struct {                                                                                        \
        T(v##W) absm, one, cap, nrm1, sr, thr[7], khb, sab, zq;                                             \
        ELT S, sign_shift;                                                                                  \
        int32_t nthr;                                                                                       \
    } T(consts##W);                                                                                         \
    static inline T(consts##W) T(consts_of##W)(const pow2_t *P)                                            \
    {                                                                                                       \
        T(consts##W) c;                                                                                     \
        const ELT S = (ELT)(MB - P->M);                                                                     \
        c.absm = (T(v##W)){0} + (ELT)(((ELT)1 << (8 * sizeof(ELT) - 1)) - 1);                              \
        c.one = (T(v##W)){0} + 1;                                                                           \
        c.cap = (T(v##W)){0} + (ELT)P->ovf;                                                                 \
        c.nrm1 = (T(v##W)){0} + (ELT)(((ELT)1 << MB) - 1);                                                  \
        /* the subnormal range's width k + 2^mb - ks = (M + 1) << mb, biased by the sign bit (sub_lanes) */  \
        c.sr = (T(v##W)){0} + (ELT)((ELT)((ELT)(P->M + 1) << MB) ^ (ELT)((ELT)1 << (8 * sizeof(ELT) - 1)));  \
        for (int i = 0; i < 7; i++) c.thr[i] = (T(v##W)){0} + (ELT)(sizeof(ELT) == 2 ? P->thr16[i] : P->thr32[i]); \
        c.S = S;                                                                                            \
        c.sign_shift = (ELT)(8 * sizeof(ELT) - 1 - P->sign_shift);                                          \
        /* a block's k - half + 1, top - ks and (E + z) << mb (k = (E + 127 - bias) << mb, ks = k - (M << mb), \
         * half = 2^(S - 1)) are these plus or minus E << mb */                                             \
        const ELT h1 = (ELT)(((ELT)1 << (S - 1)) - 1), kb = (ELT)(127 - P->bias), ksb = (ELT)(127 - P->bias - P->M); \
        c.khb = (T(v##W)){0} + (ELT)((ELT)(kb << MB) - h1);                                                 \
        c.sab = (T(v##W)){0} + (ELT)(((ELT)1 << (8 * sizeof(ELT) - 1)) - (ELT)(ksb << MB));                \
        c.zq = (T(v##W)){0} + (ELT)((ELT)P->z << MB);                                                       \
        c.nthr = P->nthr;                                                                                   \
        return c;                                                                                           \
    }                                                                                                       \
    /* codes of one vector, shift encoder, for lanes outside the subnormal range [ks, k + 2^mb):        \
     * (v + lsb) >> S with v = |x| - (k - half + 1) saturated at 0 rounds to nearest even (the half - 1  \
     * added before the subtraction leaves bit S as it is wherever the lsb decides a tie) */               \
    static inline __attribute__((always_inline)) T(v##W) T(enc_shift##W)(T(v##W) p, const T(consts##W) *C,  \
                                                                        T(v##W) kh)                         \
    {                                                                                                       \
        typedef T(v##W) V;                                                                                  \
        const V v = SUBS(p & C->absm, kh);                                                                  \
        const V q = (v + ((v >> C->S) & C->one)) >> C->S;                                                   \
        return MINU(q, C->cap) | ((p & ~C->absm) >> C->sign_shift);                                         \
    }                                                                                                       \
    /* the lanes in the subnormal range: ks <= |x| < kn, as one signed compare (bias by the sign bit) */   \
    static inline __attribute__((always_inline)) T(v##W) T(sub_lanes##W)(T(v##W) p, const T(consts##W) *C,  \
                                                                        T(v##W) sa, T(v##W) sr)             \
    {                                                                                                       \
        typedef T(s##W) SV;                                                                                 \
        return (T(v##W))((SV)sr > (SV)((p & C->absm) + sa));                                               \
    }                                                                                                       \
    /* the codes of the lanes of p in the subnormal range (shift encoder; rare, out of line) */          \
    static __attribute__((noinline)) T(v##W) T(subnormal##W)(T(v##W) p, const T(consts##W) *C,              \
                                                             const pow2_t *P, int32_t E, T(v##W) sa, T(v##W) sr, \
                                                             T(v##W) c)                                     \
    {                                                                                                       \
        typedef T(v##W) V;                                                                                  \
        const V m = p & C->absm, sub = T(sub_lanes##W)(p, C, sa, sr);                                       \
        const ELT shmax = MB + 1, shc = (ELT)(127 + MB + P->emin - P->M + E);                               \
        V mant = (m & (ELT)((1u << MB) - 1)) | (ELT)(1u << MB), sh = shc - (m >> MB);                       \
        const V big = (V)(sh > shmax);                                                                      \
        sh = (big & shmax) | (~big & sh);                                                                   \
        const V sn = SUBNORMAL(V, mant, sh) | ((p & ~C->absm) >> C->sign_shift);                            \
        return (sub & sn) | (~sub & c);                                                                     \
    }                                                                                                       \
    /* codes of one vector: threshold encoder */                                                           \
    static inline __attribute__((always_inline)) T(v##W) T(enc_thr##W)(T(v##W) p, const T(consts##W) *C,    \
                                                                      T(v##W) kq)                          \
    {                                                                                                       \
        typedef T(v##W) V;                                                                                  \
        typedef T(s##W) SV;                                                                                 \
        const V w = SUBS(p & C->absm, kq);                                                                  \
        V c = (V)((SV)w > (SV)C->thr[0]);                                                                   \
        for (int i = 1; i < 7; i++) c += (V)((SV)w > (SV)C->thr[i]);                                        \
        return (0 - c) | ((p & ~C->absm) >> C->sign_shift);                                                 \
    }                                                                                                       \
    /* Codes of n elements (n a multiple of the lanes) of one block row at x, scale 2^E, into o. */        \
    static inline __attribute__((always_inline)) void T(enc_span##W)(const ELT *restrict x, uint8_t *restrict o, \
                                                                    int64_t n, int32_t E, const T(consts##W) *C, \
                                                                    const pow2_t *P, int32_t stream, const ELT *pf) \
    {                                                                                                       \
        typedef T(v##W) V;                                                                                  \
        const int64_t lanes = VBYTES / sizeof(ELT);                                                         \
        const V eb = (V){0} + (ELT)((ELT)E << MB);                                                          \
        int64_t i = 0;                                                                                      \
        if (C->nthr) {                                                                                      \
            const V kq = C->zq + eb;                                                                        \
            for (; i + VBYTES <= n; i += VBYTES) {                                                          \
                V p[NV], c[NV];                                                                             \
                for (int b = 0; b < (int)(VBYTES * sizeof(ELT)); b += 64) __builtin_prefetch((const char *)(pf + i) + b, 0, PF_LOCALITY); \
                for (int u = 0; u < NV; u++) memcpy(&p[u], x + i + u * lanes, sizeof p[u]);                \
                for (int u = 0; u < NV; u++) c[u] = T(enc_thr##W)(p[u], C, kq);                             \
                const T(bytes) bv = PACK(c);                                                                \
                STORE_OUT(o + i, bv, stream);                                                                \
            }                                                                                               \
            for (; i < n; i += lanes) {                                                                     \
                V p;                                                                                        \
                memcpy(&p, x + i, sizeof p);                                                                \
                const T(b##W) bv = __builtin_convertvector(T(enc_thr##W)(p, C, kq), T(b##W));               \
                memcpy(o + i, &bv, sizeof bv);                                                              \
            }                                                                                               \
            return;                                                                                         \
        }                                                                                                   \
        const V kh = C->khb + eb, sa = C->sab - eb, sr = C->sr;                                             \
        for (; i + VBYTES <= n; i += VBYTES) {                                                              \
            V p[NV], c[NV], sub = {0};                                                                      \
            for (int b = 0; b < (int)(VBYTES * sizeof(ELT)); b += 64) __builtin_prefetch((const char *)(pf + i) + b, 0, PF_LOCALITY); \
            for (int u = 0; u < NV; u++) memcpy(&p[u], x + i + u * lanes, sizeof p[u]);                    \
            for (int u = 0; u < NV; u++) {                                                                  \
                c[u] = T(enc_shift##W)(p[u], C, kh);                                                        \
                sub |= T(sub_lanes##W)(p[u], C, sa, sr);                                                    \
            }                                                                                               \
            if (ANY(sub))                                                                                   \
                for (int u = 0; u < NV; u++) c[u] = T(subnormal##W)(p[u], C, P, E, sa, sr, c[u]);           \
            const T(bytes) bv = PACK(c);                                                                    \
            STORE_OUT(o + i, bv, stream);                                                                    \
        }                                                                                                   \
        for (; i < n; i += lanes) {                                                                         \
            V p, c;                                                                                         \
            memcpy(&p, x + i, sizeof p);                                                                    \
            c = T(enc_shift##W)(p, C, kh);                                                                  \
            if (ANY(T(sub_lanes##W)(p, C, sa, sr))) c = T(subnormal##W)(p, C, P, E, sa, sr, c);             \
            const T(b##W) bv = __builtin_convertvector(c, T(b##W));                                         \
            memcpy(o + i, &bv, sizeof bv);                                                                  \
        }                                                                                                   \
    }                                                                                                       \
    /* horizontal max of a vector of |x| bits, in float32 position */                                    \
    static inline uint32_t T(hmaxv##W)(T(v##W) acc)                                                         \
    {                                                                                                       \
        uint32_t a;                                                                                         \
        if (HMAX(ELT, acc, a)) { /* this tier's horizontal max; else lane by lane */                        \
            a = 0;                                                                                          \
            for (int l = 0; l < (int)(VBYTES / sizeof(ELT)); l++) a = acc[l] > a ? acc[l] : a;              \
        }                                                                                                   \
        return a << (32 - 8 * sizeof(ELT));                                                                 \
    }                                                                                                       \
    /* Codes of the gn blocks of width bn of one row whose E[j] != NO_POW2 (inlined: bn often a constant) */ \
    static inline __attribute__((always_inline)) void T(enc_row##W)(const ELT *restrict x, uint8_t *restrict o, \
                                                                   const ELT *pf, int64_t gn, int64_t bn,   \
                                                                   const int32_t *E, const T(consts##W) *C, \
                                                                   const pow2_t *P, int32_t stream)         \
    {                                                                                                       \
        for (int64_t j = 0; j < gn; j++)                                                                    \
            if (E[j] != NO_POW2) T(enc_span##W)(x + j * bn, o + j * bn, bn, E[j], C, P, stream, pf + j * bn); \
    }                                                                                                       \
    /* One row group (nr rows of N, blocks nr x bn, N % bn == 0, bn a multiple of the lanes) under a        \
     * power-of-two step rule: the blocks' amaxes, their scales (pow2_scales), then the codes of the blocks  \
     * the path takes (E[j] != NO_POW2). A row is in L1 while its three passes run; tiles read their rows   \
     * in order for the amaxes (the prefetchers see one stream), then again for the codes. a: gn words of   \
     * scratch, acc: gn vectors. Returns 1 where the group must go to the general kernel (non-finite). */   \
    static __attribute__((noinline)) int T(pow2_group##W)(const quant_t *Q, const ELT *restrict x, int64_t nr, \
                                                          int64_t g0, uint8_t *restrict out, const ELT *pf,     \
                                                          int32_t *E, uint32_t *a, T(v##W) *acc)           \
    {                                                                                                       \
        typedef T(v##W) V;                                                                                  \
        const int64_t N = Q->N, bn = Q->bn, gn = N / bn, lanes = VBYTES / sizeof(ELT);                     \
        const T(consts##W) C = T(consts_of##W)(&Q->pow2);                                                   \
        if (nr == 1) {                                                                                      \
            int64_t j = 0;                                                                                  \
            if (sizeof(ELT) == 2 && bn % 16 == 0) /* 8 blocks at a time, one lane each */                  \
                for (; j + 8 <= gn; j += 8) T(amax8_h16)((const uint16_t *)x + j * bn, bn, a + j);           \
            for (; j < gn; j++) {                                                                           \
                const ELT *xb = x + j * bn;                                                                 \
                V m0 = {0}, m1 = {0}, p0, p1;                                                               \
                int64_t i = 0;                                                                              \
                for (; i + 2 * lanes <= bn; i += 2 * lanes) {                                               \
                    memcpy(&p0, xb + i, sizeof p0);                                                         \
                    memcpy(&p1, xb + i + lanes, sizeof p1);                                                 \
                    m0 = MAXU(m0, p0 & C.absm);                                                             \
                    m1 = MAXU(m1, p1 & C.absm);                                                             \
                }                                                                                           \
                if (i < bn) {                                                                               \
                    memcpy(&p0, xb + i, sizeof p0);                                                         \
                    m0 = MAXU(m0, p0 & C.absm);                                                             \
                }                                                                                           \
                a[j] = T(hmaxv##W)(MAXU(m0, m1));                                                            \
            }                                                                                               \
        } else {                                                                                            \
            for (int64_t j = 0; j < gn; j++) acc[j] = (V){0};                                               \
            for (int64_t r = 0; r < nr; r++) {                                                              \
                const ELT *xr = x + r * N;                                                                  \
                for (int64_t j = 0; j < gn; j++) {                                                          \
                    V m = acc[j];                                                                           \
                    for (int64_t i = j * bn; i < (j + 1) * bn; i += lanes) {                                \
                        V p;                                                                                \
                        memcpy(&p, xr + i, sizeof p);                                                       \
                        m = MAXU(m, p & C.absm);                                                            \
                    }                                                                                       \
                    acc[j] = m;                                                                             \
                }                                                                                           \
            }                                                                                               \
            for (int64_t j = 0; j < gn; j++) a[j] = T(hmaxv##W)(acc[j]);                                     \
        }                                                                                                   \
        if (T(pow2_scales)(Q, a, gn, g0, E)) return 1;                                                      \
        /* the common widths (MX 1 x 32, DeepSeek 128) as constants: no loop or tail setup per block */      \
        for (int64_t r = 0; r < nr; r++) {                                                                  \
            const ELT *xr = x + r * N, *pr = pf + r * N;                                                    \
            uint8_t *orow = out + r * N;                                                                    \
            if (bn == 32) T(enc_row##W)(xr, orow, pr, gn, 32, E, &C, &Q->pow2, Q->stream);                  \
            else if (bn == 128) T(enc_row##W)(xr, orow, pr, gn, 128, E, &C, &Q->pow2, Q->stream);           \
            else T(enc_row##W)(xr, orow, pr, gn, bn, E, &C, &Q->pow2, Q->stream);                           \
        }                                                                                                   \
        return 0;                                                                                           \
    }                                                                                                       \
    /* Codes of the blocks j < nb of a row strip (nr rows, strides xs / os) whose E[j] != NO_POW2. */      \
    static __attribute__((noinline)) void T(pow2_blocks##W)(const ELT *restrict x, int64_t xs, int64_t nr,  \
                                                            int64_t nb, int64_t bn, const int32_t *E,       \
                                                            const pow2_t *P, uint8_t *restrict out, int64_t os, \
                                                            const ELT *pf)                                  \
    {                                                                                                       \
        const T(consts##W) C = T(consts_of##W)(P);                                                          \
        for (int64_t j = 0; j < nb; j++)                                                                    \
            if (E[j] != NO_POW2)                                                                            \
                for (int64_t r = 0; r < nr; r++)                                                            \
                    T(enc_span##W)(x + r * xs + j * bn, out + r * os + j * bn, bn, E[j], &C, P, 0,          \
                                   pf + r * xs + j * bn);                                                   \
    }
/* the lanes of one vector: blocks whose width is a multiple of it take the power-of-two path */
static inline int64_t T(pow2_lanes)(int32_t bf16) { return bf16 ? VBYTES / 2 : VBYTES / 4; }
POW2_PATH(16, uint16_t, int16_t, 7, SUBNORMAL_16, SUBS16, MINU16, MAXU16, PACK16, 2)
POW2_PATH(32, uint32_t, int32_t, 23, SUBNORMAL_EXACT, SUBS32, MINU32, MAXU32, PACK32, 4)
#undef POW2_PATH
#undef SUBNORMAL_16
#undef SUBNORMAL_EXACT

/* Row groups [t0, t1) of block quantization (see quant_t); returns how many groups hold a block
 * the kernel leaves to the general one (their outputs are partly written). A row group's blocks
 * first get their scales (amax, rule), then their codes: the power-of-two path takes the blocks it
 * can, the lean float32 encoder the other finite ones, the full encoder the rest; each in one call
 * per row of blocks (1 x bn blocks) or per tile (bm x bn). */
static int64_t T(quant_range)(const quant_t *Q, int64_t t0, int64_t t1)
{
    const int64_t M = Q->M, N = Q->N, bm = Q->bm, bn = Q->bn;
    const int64_t gm = (M + bm - 1) / bm, gn = (N + bn - 1) / bn, es = Q->bf16 ? 2 : 4;
    const int32_t whole = N % bn == 0 && bn % T(pow2_lanes)(Q->bf16) == 0, bf = Q->bf16;
    const int64_t chunk = bm == 1 ? gn : 1;
    char *scratch = malloc(chunk * (3 * sizeof(int32_t) + sizeof(float) + 4));
    uint32_t *a = (uint32_t *)scratch;
    int32_t *E = (int32_t *)(a + chunk), *dv = E + chunk;
    float *mul = (float *)(dv + chunk);
    uint8_t *lean = (uint8_t *)(mul + chunk), *full = lean + chunk, *nvc = full + chunk;
    const int32_t fused = whole && Q->mode == 0 && Q->lean;
    int32_t *Ef = fused ? malloc(gn * 2 * sizeof(int32_t)) : NULL;
    void *acc = fused && bm > 1 ? aligned_alloc(VBYTES, gn * VBYTES) : NULL;
    /* NVFP4 rows in one pass each, last first: the tensor-amax pass before this call has just read them */
    const int32_t nvrow = Q->mode == 2 && Q->lean && bm == 1 && bn == 16 && N % VBYTES == 0 && N % 128 == 0
                         && (Q->fast.ovf == Q->fast.maxq || Q->fast.ovf == Q->fast.maxq + 1);
    int64_t bad = 0;
    for (int64_t tt = t0; tt < t1; tt++) {
        const int64_t t = nvrow ? t1 - 1 - (tt - t0) : tt;
        const int64_t b = t / gm, g = t - b * gm, r0 = g * bm, nr = (r0 + bm < M ? r0 + bm : M) - r0;
        const char *xg = (const char *)Q->x + (b * M + r0) * N * es;
        uint8_t *cg = Q->codes + (b * M + r0) * N;
        const char *pfr = t > t0 ? xg - N * es : xg;  /* the row the next step reads */
        if (nvrow && !(bf ? T(nvfp4_row16)(Q, (const uint16_t *)xg, cg, t * gn, a, mul, (const uint16_t *)pfr)
                          : T(nvfp4_row32)(Q, (const uint32_t *)xg, cg, t * gn, a, mul, (const uint32_t *)pfr)))
            continue;
        if (fused) {  /* the common case: the whole row group on the power-of-two path */
            const char *pf = xg + nr * N * es;
            uint32_t *af = (uint32_t *)(Ef + gn);
            const int r = bf ? T(pow2_group16)(Q, (const uint16_t *)xg, nr, t * gn, cg, (const uint16_t *)pf, Ef, af, acc)
                             : T(pow2_group32)(Q, (const uint32_t *)xg, nr, t * gn, cg, (const uint32_t *)pf, Ef, af, acc);
            int all = !r;
            for (int64_t j = 0; j < gn && all; j++) all &= Ef[j] != NO_POW2;
            if (all) continue;  /* else the group again, by the general path below */
        }
        int isbad = 0;
        for (int64_t j0 = 0; j0 < gn && !isbad; j0 += chunk) {
            const int64_t nb = j0 + chunk < gn ? chunk : gn - j0;
            uint32_t amax_all = 0;
            for (int64_t j = 0; j < nb; j++) {
                const int64_t c0 = (j0 + j) * bn, n = (c0 + bn < N ? c0 + bn : N) - c0;
                a[j] = T(amax_rows)(xg + c0 * es, bf, nr, N, n);
                amax_all = a[j] > amax_all ? a[j] : amax_all;
            }
            if (amax_all >= 0x7F800000u) {
                isbad = 1;
                break;
            }
            int any_pow2 = 0, any_lean = 0, any_full = 0;
            if (Q->mode == 2) {
                (void)T(nvfp4_scales)(a, nb, Q, Q->stored + t * gn + j0, Q->sgrid + t * gn + j0, mul);
                for (int64_t j = 0; j < nb; j++) dv[j] = 0;
            } else {
                for (int64_t j = 0; j < nb && !isbad; j++) {
                    mul[j] = 1.0f;
                    dv[j] = 0;
                    isbad = block_scale(Q, a[j], t * gn + j0 + j, &mul[j], &dv[j]);
                }
                if (isbad) break;
            }
            for (int64_t j = 0; j < nb; j++) {
                /* the lean encoders need every scaled value finite */
                const float ymax = dv[j] ? u2f(a[j]) / mul[j] : u2f(a[j]) * mul[j];
                const int ok = Q->lean && (f2u(ymax) & 0x7FFFFFFFu) < 0x7F800000u;
                E[j] = whole && ok ? pow2_exponent(Q, mul[j], dv[j], a[j]) : NO_POW2;
                lean[j] = E[j] == NO_POW2 && ok;
                full[j] = E[j] == NO_POW2 && !ok;
                any_pow2 |= E[j] != NO_POW2;
                any_lean |= lean[j];
                any_full |= full[j];
            }
            const char *xj = xg + j0 * bn * es;
            uint8_t *cj = cg + j0 * bn;
            /* prefetch what the next amax pass reads: the next row group, or the next tile */
            const char *pf = bm == 1 ? xj + nr * N * es : (j0 + 1 < gn ? xj + bn * es : xg + nr * N * es);
            const int64_t Nj = N - j0 * bn;
            if (any_pow2) {
                if (bf) T(pow2_blocks16)((const uint16_t *)xj, N, nr, nb, bn, E, &Q->pow2, cj, N, (const uint16_t *)pf);
                else T(pow2_blocks32)((const uint32_t *)xj, N, nr, nb, bn, E, &Q->pow2, cj, N, (const uint32_t *)pf);
            }
            for (int pass = 0; pass < 2; pass++) {  /* lean, then full; multiply, then divide */
                if (!(pass ? any_full : any_lean)) continue;
                const uint8_t *sel0 = pass ? full : lean;
                for (int d = 0; d < 2; d++) {
                    for (int64_t j = 0; j < nb; j++) nvc[j] = sel0[j] && dv[j] == d;
                    if (pass == 0 && bf) (d ? T(lean_div16) : T(lean_mul16))((const uint16_t *)xj, N, nr, nb, bn, Nj, mul, nvc, Q->fast, cj, N, (const void *)pf);
                    if (pass == 0 && !bf) (d ? T(lean_div32) : T(lean_mul32))((const uint32_t *)xj, N, nr, nb, bn, Nj, mul, nvc, Q->fast, cj, N, (const void *)pf);
                    if (pass == 1 && bf) (d ? T(gen_div16) : T(gen_mul16))((const uint16_t *)xj, N, nr, nb, bn, Nj, mul, nvc, Q->enc, cj, N, (const void *)pf);
                    if (pass == 1 && !bf) (d ? T(gen_div32) : T(gen_mul32))((const uint32_t *)xj, N, nr, nb, bn, Nj, mul, nvc, Q->enc, cj, N, (const void *)pf);
                }
            }
        }
        bad += isbad;
    }
    free(scratch);
    free(Ef);
    free(acc);
    return bad;
}

/* Dequantization of a row of blocks of a sign-bit float format without a table lookup per element:
 * a code's bf16 bits are its exponent and mantissa fields moved into place (subnormal codes: a table
 * of eight). With a power-of-two scale 2^E the product is exact: E joins the exponent field. Other
 * scales multiply in float32 and round, as the reference. Lanes of Inf / NaN codes, and blocks whose
 * products could leave the normal range, are redone from the float table. */
static inline void T(dequant_tail)(const uint8_t *c, int64_t k0, int64_t k1, const dequant_t *D, float s, void *out)
{
    for (int64_t k = k0; k < k1; k++) {
        const float v = D->lut[c[k]] * s;
        if (D->bf16) ((uint16_t *)out)[k] = bf16_rne(f2u(v));
        else ((float *)out)[k] = v;
    }
}

/* The bf16 patterns pat of the codes at c + k (DEQUANT_ROW's locals), and the lanes of Inf / NaN codes
 * redone from the float table. WIDEN_U8 (this tier's) widens the bytes to 16-bit lanes. */
#define DQ_PAT(NAME, LUT)                                                                                   \
    V code;                                                                                                 \
    WIDEN_U8(code, c + k);                                                                                  \
    const V sgn = code & sign, mag = code ^ sgn, m = mag & mmask;                                           \
    const V sub = (V)((T(NAME##_s))mag < lim);                                                              \
    const V nrm = (mag << sh) + kexp;                                                                       \
    const V sbn = LUT(tabe, m);                                                                             \
    const V pat = (sub & sbn) | (~sub & nrm) | (sgn << ssh);
#define DQ_SPECIAL(ANYF)                                                                                    \
    const V spec = (V)(mag >= special);                                                                     \
    if (ANYF(spec))                                                                                         \
        for (int64_t i = k; i < k + lanes; i++)                                                             \
            if ((c[i] & (sign - 1)) >= special) T(dequant_tail)(c, i, i + 1, D, s, out);
/* Codes are prefetched this many bytes ahead: the hardware prefetchers alone left the loads of codes
 * stalling beside the non-temporal stores of the output (SPR: 1.5x a copy on AVX2 without, 0.7x with). */
#define DQ_AHEAD 2048
/* One instance per vector width VB (bytes of 16-bit lanes): the tier's, and half of it for blocks
 * narrower than a full vector (NVFP4's 16 on AVX-512). */
#define DEQUANT_ROW(NAME, VB, ANYF, LUT)                                                                           \
    typedef uint16_t T(NAME##_v) __attribute__((vector_size(VB)));                                         \
    typedef int16_t T(NAME##_s) __attribute__((vector_size(VB)));                                          \
    typedef uint8_t T(NAME##_b) __attribute__((vector_size(VB / 2)));                                      \
    typedef uint32_t T(NAME##_w) __attribute__((vector_size(2 * VB)));                                     \
    typedef float T(NAME##_f) __attribute__((vector_size(2 * VB)));                                        \
    static inline __attribute__((always_inline)) void T(NAME##_body)(const uint8_t *restrict c, int64_t N,  \
                                                                    int64_t bn, const float *sg,            \
                                                                    const dequant_t *D, void *restrict out) \
    {                                                                                                       \
        typedef T(NAME##_v) V;                                                                              \
        typedef T(NAME##_w) W;                                                                              \
        const int lanes = VB / 2;                                                                           \
        const uint16_t sign = (uint16_t)(1u << D->sign_shift), mmask = (uint16_t)((1u << D->M_) - 1);       \
        const uint16_t sh = (uint16_t)(7 - D->M_), special = (uint16_t)D->special_min;                         \
        const uint16_t ssh = (uint16_t)(15 - D->sign_shift), k0exp = (uint16_t)((127 - D->bias) << 7);     \
        const int32_t bf = D->bf16, stream = D->stream; /* locals: the stores could alias *D */             \
        (void)stream;                                                                                       \
        V tab = {0}, nz = {0};                                                                              \
        for (int i = 0; i < lanes; i++) { /* in every 128-bit lane */                                       \
            tab[i] = D->subtab[i & 7];                                                                      \
            nz[i] = (i & 7) ? 0xFFFF : 0;                                                                   \
        }                                                                                                   \
        const T(NAME##_s) lim = (T(NAME##_s)){0} + (int16_t)(1 << D->M_); /* magnitudes below: subnormal */ \
        for (int64_t j0 = 0; j0 < N; j0 += bn) {                                                            \
            const int64_t n = j0 + bn < N ? bn : N - j0;                                                    \
            const float s = sg[j0 / bn];                                                                    \
            const uint32_t sb = f2u(s);                                                                     \
            const int32_t E = (int32_t)(sb >> 23) - 127;                                                    \
            const int pow2 = sb >= 0x00800000u && sb < 0x7F800000u && !(sb & 0x7FFFFFu) && E >= D->e_lo    \
                             && E <= D->e_hi;                                                               \
            const uint16_t kexp = (uint16_t)(k0exp + (pow2 ? E << 7 : 0)), e7 = (uint16_t)(pow2 ? E << 7 : 0); \
            const V tabe = tab + (nz & e7); /* the block's subnormal codes: 2^E joins nonzero ones */          \
            int64_t k = j0;                                                                                 \
            if (pow2 && bf) { /* the common case in a loop of its own */                                    \
                for (; k + lanes <= j0 + n; k += lanes) {                                                   \
                    if (!(k & 63)) __builtin_prefetch(c + k + DQ_AHEAD);                                      \
                    DQ_PAT(NAME, LUT)                                                                       \
                    STORE_OUT((uint16_t *)out + k, pat, stream);                                            \
                    DQ_SPECIAL(ANYF)                                                                        \
                }                                                                                           \
            }                                                                                               \
            for (; k + lanes <= j0 + n; k += lanes) {                                                       \
                DQ_PAT(NAME, LUT)                                                                           \
                if (pow2) {                                                                                 \
                    const W w = __builtin_convertvector(pat, W) << 16;                                      \
                    STORE_OUT((uint32_t *)out + k, w, stream);                                              \
                } else { /* the decoded value times s in float32, rounded like the reference */             \
                    const T(NAME##_f) v = (T(NAME##_f))(__builtin_convertvector(pat, W) << 16) * s;         \
                    if (bf) {                                                                               \
                        const W u = (W)v, r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;                       \
                        const W nan = (W)((u & 0x7FFFFFFFu) > 0x7F800000u);                                 \
                        const V h = __builtin_convertvector((nan & ((u >> 16) | 0x40u)) | (~nan & r), V);   \
                        memcpy((uint16_t *)out + k, &h, sizeof h);                                          \
                    } else {                                                                                \
                        memcpy((float *)out + k, &v, sizeof v);                                             \
                    }                                                                                       \
                }                                                                                           \
                DQ_SPECIAL(ANYF)                                                                            \
            }                                                                                               \
            T(dequant_tail)(c, k, j0 + n, D, s, out);                                                       \
        }                                                                                                   \
    }                                                                                                       \
    /* DeepSeek's 128-wide blocks with a constant width: no loop or tail setup per block */                 \
    static __attribute__((noinline)) void T(NAME)(const uint8_t *restrict c, int64_t N, int64_t bn,        \
                                                  const float *sg, const dequant_t *D, void *restrict out)  \
    {                                                                                                       \
        if (bn == 128 && N % 128 == 0) T(NAME##_body)(c, N, 128, sg, D, out);                               \
        else T(NAME##_body)(c, N, bn, sg, D, out);                                                          \
    }
#define ANY_BYTES(v) any_bytes(&(v), sizeof(v))
DEQUANT_ROW(dequant_row, VBYTES, ANY, LUT16)
#if VBYTES >= 32  /* the subnormal table needs 8 lanes */
DEQUANT_ROW(dequant_row_half, VBYTES / 2, ANY_BYTES, LUT16_HALF)
#else
#define dequant_row_half_base dequant_row_base
#endif
#undef DEQUANT_ROW
#undef ANY_BYTES
#undef DQ_PAT
#undef DQ_SPECIAL

/* Row groups [t0, t1) of dequantization: out = decode(code) * s in float32, or that rounded to bf16 */
static void T(dequant_range)(const dequant_t *D, int64_t t0, int64_t t1)
{
    const int64_t M = D->M, N = D->N, bm = D->bm, bn = D->bn;
    const int64_t gm = (M + bm - 1) / bm, gn = (N + bn - 1) / bn, es = D->bf16 ? 2 : 4;
    const float *lut = D->lut;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / gm, g = t - b * gm, r0 = g * bm, r1 = r0 + bm < M ? r0 + bm : M;
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *c = D->codes + (b * M + r) * N;
            if (D->arith) {  /* blocks narrower than a vector: the half-width instance */
                (bn % (VBYTES / 2) && !(bn % (VBYTES / 4)) ? T(dequant_row_half) : T(dequant_row))(
                    c, N, bn, D->sgrid + t * gn, D, (char *)D->out + (b * M + r) * N * es);
                continue;
            }
            for (int64_t j = 0; j < gn; j++) {
                const int64_t k0 = j * bn, k1 = k0 + bn < N ? k0 + bn : N;
                const float s = D->sgrid[t * gn + j];
                if (D->bf16) {
                    uint16_t *o = (uint16_t *)D->out + (b * M + r) * N;
                    for (int64_t k = k0; k < k1; k++) o[k] = bf16_rne(f2u(lut[c[k]] * s));
                } else {
                    float *o = (float *)D->out + (b * M + r) * N;
                    for (int64_t k = k0; k < k1; k++) o[k] = lut[c[k]] * s;
                }
            }
        }
    }
}

/* this tier's macros, defined by native.c before the include */
#undef T
#undef VBYTES
#undef ANY
#undef STORE_OUT
#undef HMAX
#undef SUBS16
#undef MINU16
#undef SUBS32
#undef MINU32
#undef MAXU16
#undef MAXU32
#undef PACK16
#undef PACK32
#undef LUT16
#undef LUT16_HALF
#undef WIDEN_BF16
#undef WIDEN_U8
#undef NVFP4_CELLS

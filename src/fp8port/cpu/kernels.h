/* The kernels, written once in plain C for the compiler to vectorize; native.c includes this file
 * once per ISA tier (under a `#pragma GCC target`) with T(name) giving that tier's names.
 * Every loop over elements is branch-free: the per-element work is integer and float32
 * arithmetic on bit patterns (encode_one), so GCC turns it into AVX2 / AVX-512 / NEON code. */

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
static inline T(lv32) T(encode_fast_v)(T(lv32) u, const fast_t f)
{
    typedef T(lv32) V;
    const V a = u & 0x7FFFFFFFu;
    const V qn = (a + f.rnd_off + ((a >> f.S) & 1u)) >> f.S;
    const V qs = (V)((T(lvf))a + f.magic) - f.magic_bits;
    const V sub = (V)(a < f.min_normal);
    V q = (sub & qs) | (~sub & qn);
    const V over = (V)(q > f.maxq);
    q = (over & f.ovf) | (~over & q);
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
                      const T(lv8) c = __builtin_convertvector(T(encode_fast_v)((T(lv32))y, p), T(lv8));   \
                      memcpy(o + k, &c, sizeof c);                                                          \
                  }                                                                                         \
                  for (; k < n; k++) {                                                                      \
                      const uint32_t u = sizeof(XT) == 2 ? (uint32_t)xr[k] << 16 : (uint32_t)xr[k];         \
                      o[k] = (uint8_t)T(encode_fast)(f2u(u2f(u) OP m), p);                                  \
                  })                                                                                        \
    }
#define WIDEN16(u, p) do { T(lv16) h; memcpy(&h, (p), sizeof h); (u) = __builtin_convertvector(h, T(lv32)) << 16; } while (0)
#define WIDEN32(u, p) memcpy(&(u), (p), sizeof(u))
LEAN_FN(lean_mul16, uint16_t, WIDEN16, *)
LEAN_FN(lean_div16, uint16_t, WIDEN16, /)
LEAN_FN(lean_mul32, uint32_t, WIDEN32, *)
LEAN_FN(lean_div32, uint32_t, WIDEN32, /)
#undef LEAN_FN
#undef FOR_SPANS
#undef SPAN_ARGS
#undef WIDEN16
#undef WIDEN32

/* NVFP4's block scales of one row of blocks, vectorized over the blocks: the E4M3 code of
 * clamp(fp32(amax / max) / p, 2^-6, 448), s = p * s_blk, and the element multiplier
 * fp32(fp32(1 / p) / s_blk). Blocks are finite here (checked by the caller). */
static __attribute__((noinline)) void T(nvfp4_scales)(const uint32_t *restrict a, int64_t nb, const quant_t *Q,
                                                      uint8_t *restrict code, float *restrict sg, float *restrict mul)
{
    const float maxv = Q->maxv, p = Q->p, inv_p = 1.0f / Q->p;
    const enc_t e4 = Q->e4m3;
    for (int64_t j = 0; j < nb; j++) {
        float bs = (u2f(a[j]) / maxv) / p;
        bs = bs < 0.015625f ? 0.015625f : bs;
        bs = bs > 448.0f ? 448.0f : bs;
        const uint32_t c = T(encode_one)(f2u(bs), e4);
        const float sblk = u2f(((((c >> 3) & 15u) + 120u) << 23) | ((c & 7u) << 20));  /* a normal E4M3 value */
        code[j] = (uint8_t)c;
        sg[j] = p * sblk;
        mul[j] = inv_p / sblk;
    }
}

/* Power-of-two blocks of sign-bit float formats, rounded to nearest even (pow2_t): the scaled value
 * x * 2^-E is never formed. One saturating subtraction of k = (E + 127 - bias) << mb from |x|'s bits
 * both divides by 2^E and rebiases to the format; the normal codes are that pattern rounded right
 * by mb - M bits. Lanes below the format's normal range take a rounded variable shift of the
 * significand, computed only where a vector holds one. Needs E >= bias + M - 126, so that a
 * subnormal input lands below every half step (checked per block by the caller). One body for
 * 16-bit lanes (bf16 input, mb = 7) and 32-bit lanes (float32 input, mb = 23). */
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

#define POW2_ENCODE(V, SV, STYPE, ELT, MB, SUBNORMAL)                                                    \
    m = p & absm;                                                                                        \
    v = m - k; /* negative (as signed) below k: masked by the signed test below */                       \
    const V normal = (V)((SV)v >= (STYPE)nrm);                                                           \
    q = (v + h1 + ((v >> S) & one)) >> S;                                                                \
    c = (V)(q > maxq);                                                                                   \
    c = ((c & ovf) | (~c & q)) & normal;                                                                 \
    const V sub = ~normal & (V)(m >= ks);                                                                \
    if (ANY(sub)) {                                                                                      \
        V mant = (m & mmask) | nrm, sh = shc - (m >> MB), sn;                                            \
        const V big = (V)(sh > shmax);                                                                   \
        sh = (big & shmax) | (~big & sh);                                                                \
        sn = SUBNORMAL(V, mant, sh);                                                                     \
        c = (sub & sn) | (~sub & c);                                                                     \
    }

#define POW2_BLOCK(NAME, ELT, STYPE, MB, SUBNORMAL)                                                                 \
    typedef ELT T(NAME##_v) __attribute__((vector_size(VBYTES)));                                       \
    typedef STYPE T(NAME##_s) __attribute__((vector_size(VBYTES)));                                     \
    typedef uint8_t T(NAME##_b) __attribute__((vector_size(VBYTES / sizeof(ELT))));                     \
    static __attribute__((noinline)) void T(NAME)(const ELT *restrict x, int64_t xs, int64_t nr, int64_t nb,  \
                                                  int64_t bn, const int32_t *E, const pow2_t P,          \
                                                  uint8_t *restrict out, int64_t os, const ELT *pf,      \
                                                  int32_t stream)                                        \
    {                                                                                                    \
        typedef T(NAME##_v) V;                                                                           \
        typedef T(NAME##_s) SV;                                                                          \
        const int lanes = VBYTES / sizeof(ELT);                                                          \
        const ELT one = 1, absm = (ELT)(((ELT)1 << (sizeof(ELT) * 8 - 1)) - 1), nrm = (ELT)((ELT)1 << MB); \
        const ELT S = (ELT)(MB - P.M), h1 = (ELT)(((ELT)1 << (S - 1)) - 1), mmask = (ELT)(nrm - 1);     \
        const ELT shmax = (ELT)(MB + 1), maxq = (ELT)P.maxq, ovf = (ELT)P.ovf;                          \
        for (int64_t j = 0; j < nb; j++) {                                                               \
            if (E[j] == NO_POW2) continue;                                                               \
            const ELT k = (ELT)((ELT)(E[j] + 127 - P.bias) << MB);                                       \
            const ELT ks = (ELT)((ELT)(E[j] + 127 - P.bias - P.M) << MB);                                \
            const ELT shc = (ELT)(127 + MB + P.emin - P.M + E[j]);                                       \
            for (int64_t r = 0; r < nr; r++) {                                                           \
                const ELT *xr = x + r * xs + j * bn, *pr = pf + r * xs + j * bn;                         \
                uint8_t *o = out + r * os + j * bn;                                                      \
                for (int64_t i = 0; i < bn; i += lanes) {                                                \
                    V p, m, v, q, c;                                                                     \
                    __builtin_prefetch(pr + i); /* the next row group, read while this one computes */   \
                    memcpy(&p, xr + i, sizeof p);                                                        \
                    POW2_ENCODE(V, SV, STYPE, ELT, MB, SUBNORMAL);                                       \
                    c |= (p >> (sizeof(ELT) * 8 - 1)) << P.sign_shift;                                   \
                    const T(NAME##_b) bytes = __builtin_convertvector(c, T(NAME##_b));                   \
                    STORE_CODES(o + i, bytes, stream);                                                   \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }
/* the lanes of one vector: blocks whose width is a multiple of it take the power-of-two path */
static inline int64_t T(pow2_lanes)(int32_t bf16) { return bf16 ? VBYTES / 2 : VBYTES / 4; }
POW2_BLOCK(pow2_16, uint16_t, int16_t, 7, SUBNORMAL_16)
POW2_BLOCK(pow2_32, uint32_t, int32_t, 23, SUBNORMAL_EXACT)
/* One row of 1 x bn blocks under a power-of-two rule, one pass per block: amax (vector max, then a
 * halving ladder of lane shuffles), the scale from the step table, the codes from the same cached
 * bytes. done[j] = 0 leaves block j to the caller (a scale outside the power-of-two path's range);
 * returns 1 where a block is non-finite or its scale unusable (the row goes to the general kernel). */
#define ROW_POW2(NAME, ELT, STYPE, MB, SUBNORMAL, VN)                                                    \
    static __attribute__((noinline)) int T(NAME)(const ELT *restrict x, int64_t nb, int64_t bn, const quant_t *Q, \
                                                 int64_t g0, uint8_t *restrict out, const ELT *pf, uint8_t *done) \
    {                                                                                                    \
        typedef T(VN##_v) V;                                                                             \
        typedef T(VN##_s) SV;                                                                            \
        const pow2_t P = Q->pow2;                                                                        \
        const int lanes = VBYTES / sizeof(ELT);                                                          \
        const ELT one = 1, absm = (ELT)(((ELT)1 << (sizeof(ELT) * 8 - 1)) - 1), nrm = (ELT)((ELT)1 << MB); \
        const ELT S = (ELT)(MB - P.M), h1 = (ELT)(((ELT)1 << (S - 1)) - 1), mmask = (ELT)(nrm - 1);     \
        const ELT shmax = (ELT)(MB + 1), maxq = (ELT)P.maxq, ovf = (ELT)P.ovf;                          \
        const int32_t e_min = P.bias + P.M - 126;                                                        \
        SV hm[8];                                                                                        \
        int nh = 0;                                                                                      \
        for (int w = lanes / 2; w >= 1; w /= 2, nh++)                                                    \
            for (int l = 0; l < lanes; l++) hm[nh][l] = (STYPE)((l + w) % lanes);                        \
        for (int64_t j = 0; j < nb; j++) {                                                               \
            const ELT *xb = x + j * bn;                                                                  \
            SV acc = {0};                                                                                \
            for (int64_t i = 0; i < bn; i += lanes) {                                                    \
                V p;                                                                                     \
                memcpy(&p, xb + i, sizeof p);                                                            \
                const SV m = (SV)(p & absm), gt = (SV)(m > acc);                                         \
                acc = (gt & m) | (~gt & acc);                                                            \
            }                                                                                            \
            uint32_t a;                                                                                  \
            if (HMAX(ELT, acc, a)) { /* this tier's horizontal max; else a halving ladder of shuffles */ \
                for (int h = 0; h < nh; h++) {                                                           \
                    const SV o = __builtin_shuffle(acc, hm[h]), gt = (SV)(o > acc);                      \
                    acc = (gt & o) | (~gt & acc);                                                        \
                }                                                                                        \
                a = (uint32_t)(ELT)acc[0];                                                               \
            }                                                                                            \
            a <<= 32 - 8 * sizeof(ELT);                                                                  \
            if (a >= 0x7F800000u) return 1;                                                              \
            const uint32_t sb = step_scale(Q->steps, a);                                                 \
            const float s = u2f(sb);                                                                     \
            if (!(s > 0.0f) || sb >= 0x7F800000u) return 1;                                              \
            Q->sgrid[g0 + j] = s;                                                                        \
            if (Q->stored_kind == 1) Q->stored[g0 + j] = (uint8_t)(sb >> 23);                            \
            const int32_t E = (int32_t)(sb >> 23) - 127;                                                 \
            done[j] = sb >= 0x00800000u && !(sb & 0x7FFFFFu) && E >= e_min && (int32_t)(a >> 23) - E <= 254; \
            if (!done[j]) continue;                                                                      \
            const ELT k = (ELT)((ELT)(E + 127 - P.bias) << MB);                                          \
            const ELT ks = (ELT)((ELT)(E + 127 - P.bias - P.M) << MB);                                   \
            const ELT shc = (ELT)(127 + MB + P.emin - P.M + E);                                          \
            for (int64_t i = 0; i < bn; i += lanes) {                                                    \
                V p, m, v, q, c;                                                                         \
                __builtin_prefetch(pf + j * bn + i);                                                     \
                memcpy(&p, xb + i, sizeof p);                                                            \
                POW2_ENCODE(V, SV, STYPE, ELT, MB, SUBNORMAL);                                           \
                c |= (p >> (sizeof(ELT) * 8 - 1)) << P.sign_shift;                                       \
                const T(VN##_b) bytes = __builtin_convertvector(c, T(VN##_b));                           \
                STORE_CODES(out + j * bn + i, bytes, Q->stream);                                         \
            }                                                                                            \
        }                                                                                                \
        return 0;                                                                                        \
    }
ROW_POW2(row_pow2_16, uint16_t, int16_t, 7, SUBNORMAL_16, pow2_16)
ROW_POW2(row_pow2_32, uint32_t, int32_t, 23, SUBNORMAL_EXACT, pow2_32)
#undef ROW_POW2
#undef POW2_ENCODE
#undef POW2_BLOCK
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
    uint8_t *lean = (uint8_t *)(mul + chunk), *full = lean + chunk, *nvc = full + chunk, *done = nvc + chunk;
    const int32_t fused = bm == 1 && whole && Q->mode == 0 && Q->lean;
    int64_t bad = 0;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / gm, g = t - b * gm, r0 = g * bm, nr = (r0 + bm < M ? r0 + bm : M) - r0;
        const char *xg = (const char *)Q->x + (b * M + r0) * N * es;
        uint8_t *cg = Q->codes + (b * M + r0) * N;
        if (fused) {  /* the common case: every block of the row in one pass */
            const char *pf = xg + N * es;
            const int r = bf ? T(row_pow2_16)((const uint16_t *)xg, gn, bn, Q, t * gn, cg, (const uint16_t *)pf, done)
                             : T(row_pow2_32)((const uint32_t *)xg, gn, bn, Q, t * gn, cg, (const uint32_t *)pf, done);
            int all = !r;
            for (int64_t j = 0; j < gn && all; j++) all &= done[j];
            if (all) continue;  /* else the row again, by the general path below */
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
                T(nvfp4_scales)(a, nb, Q, Q->stored + t * gn + j0, Q->sgrid + t * gn + j0, mul);
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
                E[j] = whole && ok ? pow2_exponent(Q, mul[j], dv[j]) : NO_POW2;
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
                if (bf) T(pow2_16)((const uint16_t *)xj, N, nr, nb, bn, E, Q->pow2, cj, N, (const uint16_t *)pf, Q->stream);
                else T(pow2_32)((const uint32_t *)xj, N, nr, nb, bn, E, Q->pow2, cj, N, (const uint32_t *)pf, Q->stream);
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

/* One instance per vector width VB (bytes of 16-bit lanes): the tier's, and half of it for blocks
 * narrower than a full vector (NVFP4's 16 on AVX-512). */
#define DEQUANT_ROW(NAME, VB, ANYF)                                                                             \
    typedef uint16_t T(NAME##_v) __attribute__((vector_size(VB)));                                         \
    typedef uint8_t T(NAME##_b) __attribute__((vector_size(VB / 2)));                                      \
    typedef uint32_t T(NAME##_w) __attribute__((vector_size(2 * VB)));                                     \
    typedef float T(NAME##_f) __attribute__((vector_size(2 * VB)));                                        \
    static __attribute__((noinline)) void T(NAME)(const uint8_t *restrict c, int64_t N, int64_t bn,        \
                                                  const float *sg, const dequant_t *D, void *restrict out)  \
    {                                                                                                       \
        typedef T(NAME##_v) V;                                                                              \
        typedef T(NAME##_w) W;                                                                              \
        const int lanes = VB / 2;                                                                           \
        const uint16_t sign = (uint16_t)(1u << D->sign_shift), mmask = (uint16_t)((1u << D->M_) - 1);       \
        const uint16_t sh = (uint16_t)(7 - D->M_), special = (uint16_t)D->special_min, M = (uint16_t)D->M_; \
        const uint16_t ssh = (uint16_t)(15 - D->sign_shift), k0exp = (uint16_t)((127 - D->bias) << 7);     \
        V tab = {0};                                                                                        \
        for (int i = 0; i < 8; i++) tab[i] = D->subtab[i];                                                  \
        for (int64_t j0 = 0; j0 < N; j0 += bn) {                                                            \
            const int64_t n = j0 + bn < N ? bn : N - j0;                                                    \
            const float s = sg[j0 / bn];                                                                    \
            const uint32_t sb = f2u(s);                                                                     \
            const int32_t E = (int32_t)(sb >> 23) - 127;                                                    \
            const int pow2 = sb >= 0x00800000u && sb < 0x7F800000u && !(sb & 0x7FFFFFu) && E >= D->e_lo    \
                             && E <= D->e_hi;                                                               \
            const uint16_t kexp = (uint16_t)(k0exp + (pow2 ? E << 7 : 0)), e7 = (uint16_t)(pow2 ? E << 7 : 0); \
            int64_t k = j0;                                                                                 \
            for (; k + lanes <= j0 + n; k += lanes) {                                                       \
                T(NAME##_b) cb;                                                                             \
                memcpy(&cb, c + k, sizeof cb);                                                              \
                const V code = __builtin_convertvector(cb, V);                                              \
                const V sgn = code & sign, mag = code ^ sgn, m = mag & mmask;                               \
                const V sub = (V)((mag >> M) == 0);                                                         \
                const V nrm = (mag << sh) + kexp;                                                           \
                const V sbn = __builtin_shuffle(tab, m) + ((V)(m != 0) & e7);                               \
                const V pat = (sub & sbn) | (~sub & nrm) | (sgn << ssh);                                    \
                if (pow2 && D->bf16) {                                                                      \
                    memcpy((uint16_t *)out + k, &pat, sizeof pat);                                          \
                } else if (pow2) {                                                                          \
                    const W w = __builtin_convertvector(pat, W) << 16;                                      \
                    memcpy((uint32_t *)out + k, &w, sizeof w);                                              \
                } else { /* the decoded value times s in float32, rounded like the reference */             \
                    const T(NAME##_f) v = (T(NAME##_f))(__builtin_convertvector(pat, W) << 16) * s;         \
                    if (D->bf16) {                                                                          \
                        const W u = (W)v, r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;                       \
                        const W nan = (W)((u & 0x7FFFFFFFu) > 0x7F800000u);                                 \
                        const V h = __builtin_convertvector((nan & ((u >> 16) | 0x40u)) | (~nan & r), V);   \
                        memcpy((uint16_t *)out + k, &h, sizeof h);                                          \
                    } else {                                                                                \
                        memcpy((float *)out + k, &v, sizeof v);                                             \
                    }                                                                                       \
                }                                                                                           \
                const V spec = (V)(mag >= special);                                                         \
                if (ANYF(spec))                                                                             \
                    for (int64_t i = k; i < k + lanes; i++)                                                 \
                        if ((c[i] & (sign - 1)) >= special) T(dequant_tail)(c, i, i + 1, D, s, out);        \
            }                                                                                               \
            T(dequant_tail)(c, k, j0 + n, D, s, out);                                                       \
        }                                                                                                   \
    }
#define ANY_BYTES(v) any_bytes(&(v), sizeof(v))
DEQUANT_ROW(dequant_row, VBYTES, ANY)
#if VBYTES >= 32  /* the subnormal table needs 8 lanes */
DEQUANT_ROW(dequant_row_half, VBYTES / 2, ANY_BYTES)
#else
#define dequant_row_half_base dequant_row_base
#endif
#undef DEQUANT_ROW
#undef ANY_BYTES

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
#undef STORE_CODES
#undef HMAX

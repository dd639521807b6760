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

/* One loop per input type, operation and encoder, each its own function: inlined into the block
 * loop, GCC gave up on if-converting (and so vectorizing) some of them. */
#define SPAN_FN(NAME, XT, LOAD, OP, P, ENC)                                                             \
    static __attribute__((noinline)) void T(NAME)(const XT *restrict x, int64_t n, float mul, const P p,  \
                                                  uint8_t *restrict out)                                  \
    {                                                                                                     \
        for (int64_t k = 0; k < n; k++) out[k] = (uint8_t)T(ENC)(f2u(u2f(LOAD) OP mul), p);               \
    }
SPAN_FN(lean_mul16, uint16_t, (uint32_t)x[k] << 16, *, fast_t, encode_fast)
SPAN_FN(lean_div16, uint16_t, (uint32_t)x[k] << 16, /, fast_t, encode_fast)
SPAN_FN(lean_mul32, uint32_t, x[k], *, fast_t, encode_fast)
SPAN_FN(lean_div32, uint32_t, x[k], /, fast_t, encode_fast)
SPAN_FN(gen_mul16, uint16_t, (uint32_t)x[k] << 16, *, enc_t, encode_one)
SPAN_FN(gen_div16, uint16_t, (uint32_t)x[k] << 16, /, enc_t, encode_one)
SPAN_FN(gen_mul32, uint32_t, x[k], *, enc_t, encode_one)
SPAN_FN(gen_div32, uint32_t, x[k], /, enc_t, encode_one)
#undef SPAN_FN

/* codes of one row span: y = x * mul, or x / mul when div (float32, as the reference) */
static inline void T(quant_span)(const void *x, int32_t bf16, int64_t n, float mul, int32_t div, int32_t lean,
                                 const enc_t e, const fast_t f, uint8_t *restrict out)
{
    if (lean) {
        if (bf16) (div ? T(lean_div16) : T(lean_mul16))(x, n, mul, f, out);
        else (div ? T(lean_div32) : T(lean_mul32))(x, n, mul, f, out);
    } else {
        if (bf16) (div ? T(gen_div16) : T(gen_mul16))(x, n, mul, e, out);
        else (div ? T(gen_div32) : T(gen_mul32))(x, n, mul, e, out);
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

#define POW2_BLOCK(NAME, ELT, STYPE, MB, SUBNORMAL)                                                                 \
    typedef ELT T(NAME##_v) __attribute__((vector_size(VBYTES)));                                       \
    typedef STYPE T(NAME##_s) __attribute__((vector_size(VBYTES)));                                     \
    typedef uint8_t T(NAME##_b) __attribute__((vector_size(VBYTES / sizeof(ELT))));                     \
    static __attribute__((noinline)) void T(NAME)(const ELT *restrict x, int64_t xs, int64_t nr, int64_t nb,  \
                                                  int64_t bn, const int32_t *E, const pow2_t P,          \
                                                  uint8_t *restrict out, int64_t os)                     \
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
                const ELT *xr = x + r * xs + j * bn;                                                     \
                uint8_t *o = out + r * os + j * bn;                                                      \
                for (int64_t i = 0; i < bn; i += lanes) {                                                \
                    V p, m, v, q, c;                                                                     \
                    memcpy(&p, xr + i, sizeof p);                                                        \
                    m = p & absm;                                                                        \
                    v = m - k; /* negative (as signed) below k: masked by the signed test below */       \
                    const V normal = (V)((SV)v >= (STYPE)nrm);                                           \
                    q = (v + h1 + ((v >> S) & one)) >> S;                                                \
                    c = (V)(q > maxq);                                                                   \
                    c = ((c & ovf) | (~c & q)) & normal;                                                 \
                    const V sub = ~normal & (V)(m >= ks);                                                \
                    if (ANY(sub)) {                                                                      \
                        V mant = (m & mmask) | nrm, sh = shc - (m >> MB), sn;                            \
                        const V big = (V)(sh > shmax);                                                   \
                        sh = (big & shmax) | (~big & sh);                                                \
                        sn = SUBNORMAL(V, mant, sh);                                                     \
                        c = (sub & sn) | (~sub & c);                                                     \
                    }                                                                                    \
                    c |= (p >> (sizeof(ELT) * 8 - 1)) << P.sign_shift;                                   \
                    const T(NAME##_b) bytes = __builtin_convertvector(c, T(NAME##_b));                   \
                    memcpy(o + i, &bytes, sizeof bytes);                                                 \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }
/* the lanes of one vector: blocks whose width is a multiple of it take the power-of-two path */
static inline int64_t T(pow2_lanes)(int32_t bf16) { return bf16 ? VBYTES / 2 : VBYTES / 4; }
POW2_BLOCK(pow2_16, uint16_t, int16_t, 7, SUBNORMAL_16)
POW2_BLOCK(pow2_32, uint32_t, int32_t, 23, SUBNORMAL_EXACT)
#undef POW2_BLOCK
#undef SUBNORMAL_16
#undef SUBNORMAL_EXACT

/* Row groups [t0, t1) of block quantization (see quant_t); returns how many groups hold a block
 * the kernel leaves to the general one (their outputs are partly written). A row group's blocks
 * first get their scales (amax, rule), then their codes: the power-of-two path takes the blocks it
 * can in one call, the float32 encoders the rest. */
static int64_t T(quant_range)(const quant_t *Q, int64_t t0, int64_t t1)
{
    const int64_t M = Q->M, N = Q->N, bm = Q->bm, bn = Q->bn;
    const int64_t gm = (M + bm - 1) / bm, gn = (N + bn - 1) / bn, es = Q->bf16 ? 2 : 4;
    const enc_t e = Q->enc;
    const fast_t f = Q->fast;
    const int32_t whole = N % bn == 0 && bn % T(pow2_lanes)(Q->bf16) == 0;
    int32_t *E = malloc(gn * sizeof(int32_t) + gn * sizeof(float) + gn * sizeof(int32_t));
    float *mul = (float *)(E + gn);
    int32_t *how = (int32_t *)(mul + gn);  /* bit 0: divide; bit 1: the lean encoder may run */
    int64_t bad = 0;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / gm, g = t - b * gm, r0 = g * bm, nr = (r0 + bm < M ? r0 + bm : M) - r0;
        const char *xg = (const char *)Q->x + (b * M + r0) * N * es;
        uint8_t *cg = Q->codes + (b * M + r0) * N;
        /* 1 x bn blocks: a row's scales, then its codes (the row stays in cache); tiles: one at a time */
        const int64_t chunk = bm == 1 ? gn : 1;
        int isbad = 0;
        for (int64_t j0 = 0; j0 < gn && !isbad; j0 += chunk) {
            const int64_t j1 = j0 + chunk < gn ? j0 + chunk : gn;
            int any_pow2 = 0;
            for (int64_t j = j0; j < j1 && !isbad; j++) {
                const int64_t c0 = j * bn, n = (c0 + bn < N ? c0 + bn : N) - c0;
                const uint32_t a = T(amax_rows)(xg + c0 * es, Q->bf16, nr, N, n);
                int32_t div = 0;
                mul[j] = 1.0f;
                isbad = block_scale(Q, a, t * gn + j, &mul[j], &div);
                /* the lean encoders need every scaled value finite */
                const float ymax = div ? u2f(a) / mul[j] : u2f(a) * mul[j];
                how[j] = div | (Q->lean && (f2u(ymax) & 0x7FFFFFFFu) < 0x7F800000u) << 1;
                E[j] = whole ? pow2_exponent(Q, mul[j], div) : NO_POW2;
                any_pow2 |= E[j] != NO_POW2;
            }
            if (isbad) break;
            if (any_pow2) {
                const char *xj = xg + j0 * bn * es;
                if (Q->bf16) T(pow2_16)((const uint16_t *)xj, N, nr, j1 - j0, bn, E + j0, Q->pow2, cg + j0 * bn, N);
                else T(pow2_32)((const uint32_t *)xj, N, nr, j1 - j0, bn, E + j0, Q->pow2, cg + j0 * bn, N);
            }
            for (int64_t j = j0; j < j1; j++) {
                if (E[j] != NO_POW2) continue;
                const int64_t c0 = j * bn, n = (c0 + bn < N ? c0 + bn : N) - c0;
                for (int64_t r = 0; r < nr; r++)
                    T(quant_span)(xg + (r * N + c0) * es, Q->bf16, n, mul[j], how[j] & 1, how[j] >> 1, e, f,
                                  cg + r * N + c0);
            }
        }
        bad += isbad;
    }
    free(E);
    return bad;
}

/* Row groups [t0, t1) of dequantization: out = decode(code) * s in float32, or that rounded to bf16 */
static void T(dequant_range)(const dequant_t *D, int64_t t0, int64_t t1)
{
    const int64_t M = D->M, N = D->N, bm = D->bm, bn = D->bn;
    const int64_t gm = (M + bm - 1) / bm, gn = (N + bn - 1) / bn;
    const float *lut = D->lut;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / gm, g = t - b * gm, r0 = g * bm, r1 = r0 + bm < M ? r0 + bm : M;
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *c = D->codes + (b * M + r) * N;
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

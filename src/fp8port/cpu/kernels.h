/* The kernels, written once in plain C for the compiler to vectorize; native.c includes this file
 * once per ISA tier (under a `#pragma GCC target`) with T(name) giving that tier's names.
 * Every loop over elements is branch-free: the per-element work is integer and float32
 * arithmetic on bit patterns (encode_one), so GCC turns it into AVX2 / AVX-512 / NEON code. */

/* Code of the float32 bit pattern u under an element format (see enc_t in native.c). */
static inline uint32_t T(encode_one)(uint32_t u, const enc_t e)
{
    const uint32_t a = u & 0x7FFFFFFFu, neg = u >> 31;
    const int32_t fexp = (int32_t)(a >> 23);
    /* normal range: rebias the pattern and round away S mantissa bits (a carry moves the exponent) */
    const uint32_t v = a - (uint32_t)e.nrm_off;
    const uint32_t qn = (v + (uint32_t)e.rne * (e.half_n - 1 + ((v >> e.S) & 1)) + (uint32_t)e.away * e.half_n) >> e.S;
    /* subnormal (and fixed-point) range: the 24-bit significand shifted right by sh, rounded */
    const uint32_t sig = (a & 0x7FFFFFu) | ((uint32_t)(fexp != 0) << 23);
    int32_t sh = e.sub_base - fexp;
    sh = sh < 1 ? 1 : (sh > 25 ? 25 : sh);
    const uint32_t half = 1u << (sh - 1);
    const uint32_t qs = (sig + (uint32_t)e.rne * (half - 1 + ((sig >> sh) & 1)) + (uint32_t)e.away * half) >> sh;
    const uint32_t q = fexp >= e.nrm_fexp ? qn : qs;
    /* sign: two's complement, or the sign bit (kept on a zero where the format has -0) */
    const uint32_t negm = 0u - neg;
    const uint32_t twos = (0u - q) & 0xFFu;
    const uint32_t orsign = q | ((uint32_t)e.sign_bit & negm & (0u - (uint32_t)((q != 0) | e.zneg)));
    uint32_t c = e.twos ? (neg ? twos : q) : orsign;
    const uint32_t over = (uint32_t)(q > (uint32_t)(neg ? e.maxq_neg : e.maxq_pos));
    c = over ? (uint32_t)(neg ? e.ovf_neg : e.ovf_pos) : c;
    const uint32_t nonfin = a == 0x7F800000u ? (uint32_t)(neg ? e.inf_neg : e.inf_pos)
                                             : (uint32_t)(neg ? e.nan_neg : e.nan_pos);
    c = fexp == 255 ? nonfin : c;
    return c;
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

/* codes of one row span: y = x * mul, or x / mul when div (float32, as the reference) */
static inline void T(quant_span)(const void *x, int32_t bf16, int64_t n, float mul, int32_t div, const enc_t e,
                                 uint8_t *restrict out)
{
    const uint32_t *x32 = x;
    const uint16_t *x16 = x;
    if (div && bf16) {
        for (int64_t k = 0; k < n; k++) out[k] = (uint8_t)T(encode_one)(f2u(u2f((uint32_t)x16[k] << 16) / mul), e);
    } else if (div) {
        for (int64_t k = 0; k < n; k++) out[k] = (uint8_t)T(encode_one)(f2u(u2f(x32[k]) / mul), e);
    } else if (bf16) {
        for (int64_t k = 0; k < n; k++) out[k] = (uint8_t)T(encode_one)(f2u(u2f((uint32_t)x16[k] << 16) * mul), e);
    } else {
        for (int64_t k = 0; k < n; k++) out[k] = (uint8_t)T(encode_one)(f2u(u2f(x32[k]) * mul), e);
    }
}

/* Row groups [t0, t1) of block quantization (see quant_t); returns how many groups hold a block
 * the kernel leaves to the general one (their outputs are partly written). */
static int64_t T(quant_range)(const quant_t *Q, int64_t t0, int64_t t1)
{
    const int64_t M = Q->M, N = Q->N, bm = Q->bm, bn = Q->bn;
    const int64_t gm = (M + bm - 1) / bm, gn = (N + bn - 1) / bn, es = Q->bf16 ? 2 : 4;
    const enc_t e = Q->enc;
    int64_t bad = 0;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / gm, g = t - b * gm, r0 = g * bm, nr = (r0 + bm < M ? r0 + bm : M) - r0;
        const char *xg = (const char *)Q->x + (b * M + r0) * N * es;
        uint8_t *cg = Q->codes + (b * M + r0) * N;
        int isbad = 0;
        for (int64_t j = 0; j < gn && !isbad; j++) {
            const int64_t c0 = j * bn, n = (c0 + bn < N ? c0 + bn : N) - c0;
            const uint32_t a = T(amax_rows)(xg + c0 * es, Q->bf16, nr, N, n);
            float mul;
            int32_t div;
            isbad = block_scale(Q, a, t * gn + j, &mul, &div);
            for (int64_t r = 0; r < nr && !isbad; r++)
                T(quant_span)(xg + (r * N + c0) * es, Q->bf16, n, mul, div, e, cg + r * N + c0);
        }
        bad += isbad;
    }
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

/* Weight-only block-scaled GEMV (y = x W^T, W held as codes and a scale grid) and the row decoder
 * the prefill path uses; gemm.c includes this file once per ISA tier with T(name), VBYTES and the
 * tier's GFMA / GATHER macros defined.
 *
 * The dense weight is never formed: each vector of GL = VBYTES / 4 codes is decoded in registers to
 * the exact float32 values of the element (dec_*), multiplied with the activations and accumulated
 * in float32; a block's partial sums are multiplied by its scale once, at the end of the block. So
 * the result is the dequantized layer's up to float32 reassociation (docs/kernels.md states the bound).
 *
 * Decoders (gemv_t.dec): GM_FLOAT 8-bit sign-bit float formats by arithmetic (the code's fields moved
 * into float32 place, times 2^(127 - bias): float32 subnormals make the format's subnormals); GM_INT8 a
 * signed byte times the value of code 1; GM_TAB16 / GM_NIB 4-bit codes (one per byte / two per byte,
 * low nibble first) by a 16-entry table in registers; GM_FP6 6-bit codes (four in three bytes),
 * unpacked one row at a time into bytes, then the same arithmetic; GM_GATHER any byte code by a
 * gather from the 256-entry table. Python (nn/fused.py) picks one and checks it against the table
 * for every code. */

#define GL (VBYTES / 4)
typedef float T(vf) __attribute__((vector_size(VBYTES)));
typedef int32_t T(vi) __attribute__((vector_size(VBYTES)));
typedef uint32_t T(vu) __attribute__((vector_size(VBYTES)));
typedef uint16_t T(vh) __attribute__((vector_size(VBYTES / 2)));
#define NTAB (16 / GL > 0 ? 16 / GL : 1)
#define UNROLL _Pragma("GCC unroll 8")  /* loops over MB and NR: constants, so the arrays become registers */

/* tab[idx] for 16 table entries held in NTAB vectors, idx in 0..15 */
static inline T(vf) T(lut16)(const T(vf) *tab, T(vi) idx)
{
#if VBYTES == 64
    return __builtin_shuffle(tab[0], idx);
#elif VBYTES == 32
    return __builtin_shuffle(tab[0], tab[1], idx);
#else
    const T(vi) lo = idx & 7, hi = (idx & 8) != 0;
    const T(vi) a = (T(vi))__builtin_shuffle(tab[0], tab[1], lo), b = (T(vi))__builtin_shuffle(tab[2], tab[3], lo);
    return (T(vf))((b & hi) | (a & ~hi));
#endif
}

/* GL bytes widened to 32-bit lanes (LOAD_U8 / LOAD_S8: the tier's zero / sign extension) */
static inline T(vu) T(load_bytes)(const uint8_t *p) { return (T(vu))LOAD_U8(p); }

/* 8-bit codes: the sign-extended byte shifted so the magnitude lands at its float32 place (the
 * copies of the sign fill the bits above it, up to bit 31), the exponent and mantissa kept, times
 * 2^(127 - bias) */
static inline T(vf) T(dec_float)(const uint8_t *p, const gemv_t *G)
{
    return (T(vf))(((T(vu))LOAD_S8(p) << G->lsh) & G->keep) * G->fmul;
}

/* 6-bit codes (one per byte): the sign to bit 31, then an arithmetic shift places the magnitude */
static inline T(vf) T(dec_fp6)(const uint8_t *p, const gemv_t *G)
{
    const T(vi) t = (T(vi))(T(load_bytes)(p) << G->lsh) >> G->rsh;
    return (T(vf))((T(vu))t & G->keep) * G->fmul;
}

static inline T(vf) T(dec_int8)(const uint8_t *p, const gemv_t *G)
{
    return __builtin_convertvector((T(vi))LOAD_S8(p), T(vf)) * G->fmul;
}

/* GL codes from GL / 2 bytes, in the order [low nibbles, high nibbles] (the activations are permuted
 * to match once per call: prep_x) */
static inline T(vf) T(dec_nib)(const uint8_t *p, const T(vf) *tab)
{
    T(vu) sh;
    for (int i = 0; i < GL; i++) sh[i] = i < GL / 2 ? 0 : 4;
    return T(lut16)(tab, (T(vi))(((T(vu))LOAD_U8_TWICE(p) >> sh) & 15));
}

#if VBYTES == 32 && defined(__x86_64__)
/* AVX2: 32 4-bit codes (16 bytes) at once where the 16 values are bf16 values (E2M1's are): the codes
 * as bytes [low nibbles, high nibbles] index two 16-byte tables (vpshufb) of the values' bf16 low and
 * high bytes, which interleave into bf16 words and those into float32 (low half zero). The four vectors
 * hold codes [0, 2, 4, 6, 1, 3, 5, 7] + 8 j: dec_nib's order, so prep_x's permutation serves both. */
#define GM_NIBQ 1
static inline T(vf) T(loadx)(const float *p) { return (T(vf))_mm256_loadu_ps(p); }
static inline int T(nib_tables)(const gemv_t *G, __m256i *lo, __m256i *hi)
{
    uint8_t l[16], h[16];
    for (int i = 0; i < 16; i++) {
        const uint32_t u = gm_f2u(G->tab16[i]);
        if (u & 0xFFFF) return 0;
        l[i] = (uint8_t)(u >> 16), h[i] = (uint8_t)(u >> 24);
    }
    *lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)l));
    *hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)h));
    return 1;
}

static inline void T(dec_nib4)(const uint8_t *p, __m256i tlo, __m256i thi, T(vf) *v)
{
    const __m128i b = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi8(15);
    const __m256i idx = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(b, m)),
                                                _mm_and_si128(_mm_srli_epi16(b, 4), m), 1);
    const __m256i lo = _mm256_shuffle_epi8(tlo, idx), hi = _mm256_shuffle_epi8(thi, idx), z = _mm256_setzero_si256();
    const __m256i w0 = _mm256_unpacklo_epi8(lo, hi), w1 = _mm256_unpackhi_epi8(lo, hi);
    v[0] = (T(vf))_mm256_unpacklo_epi16(z, w0), v[1] = (T(vf))_mm256_unpackhi_epi16(z, w0);
    v[2] = (T(vf))_mm256_unpacklo_epi16(z, w1), v[3] = (T(vf))_mm256_unpackhi_epi16(z, w1);
}
#include "gemv1_avx2.h"  /* M = 1: folded FP8 and the 4-bit decode without inserts / word unpacks */
#else
#define GM_NIBQ 0
#endif

static inline T(vf) T(dec_gather)(const uint8_t *p, const gemv_t *G)
{
    const T(vi) idx = (T(vi))T(load_bytes)(p);
#ifdef GATHER
    return GATHER(G->lut, idx);
#else
    T(vf) v;
    for (int i = 0; i < GL; i++) v[i] = G->lut[idx[i]];
    return v;
#endif
}

static inline __attribute__((always_inline)) T(vf) T(dec)(const int DEC, const uint8_t *row, int64_t k, const gemv_t *G,
                                                          const T(vf) *tab)
{
    switch (DEC) {
    case GM_FLOAT: return T(dec_float)(row + k, G);
    case GM_FP6: return T(dec_fp6)(row + k, G);
    case GM_INT8: return T(dec_int8)(row + k, G);
    case GM_TAB16: return T(lut16)(tab, (T(vi))(T(load_bytes)(row + k) & 15));
    case GM_NIB: return T(dec_nib)(row + k / 2, tab);
    default: return T(dec_gather)(row + k, G);
    }
}

/* The bytes of the codes at position k, NR rows further on (the next group's row r: its lines are
 * fetched while this group computes; rows are short streams, too short for the hardware prefetcher to
 * learn before they end). A prefetch never faults, past the end of the codes included. */
static inline __attribute__((always_inline)) void T(prefetch_next)(const int DEC, const uint8_t *row, int64_t k,
                                                                   int64_t ahead)
{
    __builtin_prefetch(row + ahead + (DEC == GM_NIB ? k / 2 : DEC == GM_FP6 ? k * 3 / 4 : k));
}

/* one code's value, for the ends of blocks narrower than a vector (natural order) */
static inline float T(code_at)(const int DEC, const uint8_t *row, int64_t k, const gemv_t *G)
{
    return G->lut[DEC == GM_NIB ? (row[k / 2] >> (4 * (k & 1))) & 15 : row[k]];
}

/* the activations as float32, M rows of K; for GM_NIB each whole vector of a block in the decoder's
 * order (even positions, then odd) */
static void T(prep_x)(const gemv_t *G, float *restrict xp)
{
#if GM_NIBQ
    if (T(x1_prep)(G, xp)) return;
#endif
    const int64_t K = G->K, bn = G->bn;
    for (int64_t m = 0; m < G->M; m++) {
        const char *xr = (const char *)G->x + m * G->ldx * (G->x_bf16 ? 2 : 4);
        float *o = xp + m * K;
        if (G->x_bf16)
            for (int64_t k = 0; k < K; k++) o[k] = gm_u2f((uint32_t)((const uint16_t *)xr)[k] << 16);
        else
            memcpy(o, xr, K * sizeof(float));
        if (G->dec != GM_NIB) continue;
        for (int64_t k0 = 0; k0 < K; k0 += bn) {
            const int64_t k1 = k0 + bn < K ? k0 + bn : K;
            for (int64_t k = k0; k + GL <= k1; k += GL) {
                float v[GL];
                memcpy(v, o + k, sizeof v);
                for (int i = 0; i < GL / 2; i++) o[k + i] = v[2 * i], o[k + GL / 2 + i] = v[2 * i + 1];
            }
        }
    }
}

static inline float T(hsum)(T(vf) v)
{
    float s = 0.0f;
    for (int i = 0; i < GL; i++) s += v[i];
    return s;
}

/* One pass over output rows [n0, n1) in groups of NR (the caller hands the rest to NR = 1) for the
 * activation rows m0 .. m0 + MB - 1 and the codes [kc0, kc1) of each row (a chunk along K whose
 * activations stay in L1; chunks start on block boundaries); the sums go to part (rows of pn, column
 * n - pbase), added to it after the first chunk. Block mode: MB * NR accumulators over the
 * block's codes in the chunk, folded into the totals with the block's scale. Flat mode (blocks of 16
 * or 32 codes): each vector's values times their block's scale (the reference's dequantized values)
 * go straight into the totals, which saves the per-block bookkeeping of small blocks. */
static inline __attribute__((always_inline)) void T(gemv_body)(const gemv_t *G, const float *xp, int64_t m0,
                                                               int64_t n0, int64_t n1, float *part, int64_t pn,
                                                               int64_t pbase, int64_t kc0, int64_t kc1,
                                                               uint8_t *ubuf, const int MB, const int NR,
                                                               const int DEC)
{
    const int64_t K = G->K, bn = G->bn, gk = (K + bn - 1) / bn;
    const int flat = (bn == 16 || bn == 32) && bn < K, bsh = bn == 16 ? 4 : 5;
    T(vf) tab[NTAB];
    memcpy(tab, G->tab16, sizeof tab < 64 ? sizeof tab : 64);
    const float *x0 = xp + m0 * K;
#if GM_NIBQ
    __m256i tlo, thi;
    const int nibq = DEC == GM_NIB && T(nib_tables)(G, &tlo, &thi);
#endif
    for (int64_t n = n0; n + NR <= n1; n += NR) {
        const uint8_t *row[4], *src[4];  /* fixed sizes (NR <= 4, MB * NR <= 8): after inlining, registers */
        const float *srow[4], *snext[4];
        const int64_t ahead = NR * G->row_bytes;
        UNROLL for (int r = 0; r < NR; r++) {
            row[r] = src[r] = G->codes + (n + r) * G->row_bytes;
            if (DEC == GM_FP6) {
                gm_unpack6(row[r], K, ubuf + r * K);
                row[r] = ubuf + r * K;
            }
            srow[r] = G->sgrid + ((n + r) / G->bm) * gk;
            snext[r] = G->sgrid + ((n + r + NR < G->N ? n + r + NR : n + r) / G->bm) * gk;  /* prefetched only */
        }
        T(vf) tot[8];
        float ts[8];
        UNROLL for (int i = 0; i < MB * NR; i++) tot[i] = (T(vf)){0}, ts[i] = 0.0f;
        int64_t k = kc0;
        if (flat) {
#if GM_NIBQ
            /* 32 codes a step, two blocks of 16 or one of 32: each half's sum times its scale */
            if (DEC == GM_NIB && nibq)
                for (; k + 4 * GL <= kc1; k += 4 * GL)
                    UNROLL for (int r = 0; r < NR; r++) {
                        T(vf) v[4];
                        T(prefetch_next)(DEC, src[r], k, ahead);
                        __builtin_prefetch(snext[r] + (k >> bsh));
                        T(dec_nib4)(row[r] + k / 2, tlo, thi, v);
                        const T(vf) s0 = _mm256_set1_ps(srow[r][k >> bsh]), s1 = _mm256_set1_ps(srow[r][(k + 16) >> bsh]);
                        UNROLL for (int m = 0; m < MB; m++) {
                            T(vf) xv[4];
                            UNROLL for (int q = 0; q < 4; q++) xv[q] = T(loadx)(x0 + m * K + k + q * GL);
                            const T(vf) p0 = GFMA(xv[1], v[1], xv[0] * v[0]), p1 = GFMA(xv[3], v[3], xv[2] * v[2]);
                            tot[m * NR + r] = GFMA(p1, s1, GFMA(p0, s0, tot[m * NR + r]));
                        }
                    }
#endif
            for (; k + GL <= kc1; k += GL) {
                T(vf) w[4];
                UNROLL for (int r = 0; r < NR; r++) {
                    T(prefetch_next)(DEC, src[r], k, ahead);
                    __builtin_prefetch(snext[r] + (k >> bsh));
                    w[r] = T(dec)(DEC, row[r], k, G, tab) * srow[r][k >> bsh];
                }
                UNROLL for (int m = 0; m < MB; m++) {
                    T(vf) xv;
                    memcpy(&xv, x0 + m * K + k, sizeof xv);
                    UNROLL for (int r = 0; r < NR; r++) tot[m * NR + r] = GFMA(xv, w[r], tot[m * NR + r]);
                }
            }
        }
        while (k < kc1) {  /* block mode, or the tail of flat mode (K not a multiple of the lanes) */
            const int64_t j = k / bn, k1 = (j + 1) * bn < kc1 ? (j + 1) * bn : kc1;
            T(vf) acc[8];
            UNROLL for (int i = 0; i < MB * NR; i++) acc[i] = (T(vf)){0};
#if GM_NIBQ
            if (DEC == GM_NIB && nibq)
                for (; k + 4 * GL <= k1; k += 4 * GL)
                    UNROLL for (int r = 0; r < NR; r++) {
                        T(vf) v[4];
                        T(prefetch_next)(DEC, src[r], k, ahead);
                        T(dec_nib4)(row[r] + k / 2, tlo, thi, v);
                        UNROLL for (int m = 0; m < MB; m++)
                            UNROLL for (int q = 0; q < 4; q++)
                                acc[m * NR + r] = GFMA(T(loadx)(x0 + m * K + k + q * GL), v[q], acc[m * NR + r]);
                    }
#endif
            for (; k + GL <= k1; k += GL) {
                T(vf) w[4];
                UNROLL for (int r = 0; r < NR; r++) {
                    T(prefetch_next)(DEC, src[r], k, ahead);
                    w[r] = T(dec)(DEC, row[r], k, G, tab);
                }
                UNROLL for (int m = 0; m < MB; m++) {
                    T(vf) xv;
                    memcpy(&xv, x0 + m * K + k, sizeof xv);
                    UNROLL for (int r = 0; r < NR; r++) acc[m * NR + r] = GFMA(xv, w[r], acc[m * NR + r]);
                }
            }
            UNROLL for (int r = 0; r < NR; r++) {
                const float s = srow[r][j];
                T(vf) sv;
                for (int i = 0; i < GL; i++) sv[i] = s;
                UNROLL for (int m = 0; m < MB; m++) tot[m * NR + r] = GFMA(acc[m * NR + r], sv, tot[m * NR + r]);
                for (int m = 0; m < MB && k < k1; m++) {
                    float p = 0.0f;
                    for (int64_t kk = k; kk < k1; kk++) p += x0[m * K + kk] * T(code_at)(DEC, row[r], kk, G);
                    ts[m * NR + r] += p * s;
                }
            }
            k = k1;
        }
        UNROLL for (int m = 0; m < MB; m++)
            UNROLL for (int r = 0; r < NR; r++) {
                float *o = part + (m0 + m) * pn + n + r - pbase;
                *o = (kc0 ? *o : 0.0f) + (T(hsum)(tot[m * NR + r]) + ts[m * NR + r]);
            }
    }
}

/* one function per (activation rows, decoder): the body specialized with constants */
#define GEMV_FN(MB, NR, DEC)                                                                                \
    static __attribute__((noinline)) void T(gemv_##MB##_##DEC)(const gemv_t *G, const float *xp, int64_t m0, \
                                                               int64_t n0, int64_t n1, float *part,         \
                                                               int64_t kc0, int64_t kc1, uint8_t *ubuf)     \
    {                                                                                                       \
        const int64_t nf = n0 + (n1 - n0) / NR * NR;                                                        \
        T(gemv_body)(G, xp, m0, n0, nf, part, n1 - n0, n0, kc0, kc1, ubuf, MB, NR, DEC);                    \
        T(gemv_body)(G, xp, m0, nf, n1, part, n1 - n0, n0, kc0, kc1, ubuf, MB, 1, DEC);                     \
    }
/* AVX-512 and AVX2 also have a pass of 8 rows, one output row at a time: each decoded weight vector
 * serves all 8 activation rows (on AVX2's 16 registers the block totals spill, but at block ends only:
 * 7168->2048 at M = 8, one thread, FP8 4.5 -> 4.2 ms, MXFP4 8.0 -> 5.0, NVFP4 6.4 -> 7.7 (shared
 * machine, medians of three alternating runs; NVFP4 then 7.2 -> 5.2 with its scale-grid rows prefetched);
 * the base / NEON tier keeps passes of 4) */
#if VBYTES == 64
#define GM_PASSES 4
#define GEMV_DECS(DEC) GEMV_FN(1, 4, DEC) GEMV_FN(2, 4, DEC) GEMV_FN(4, 2, DEC) GEMV_FN(8, 1, DEC)
#define GEMV_ROW(DEC) {T(gemv_1_##DEC), T(gemv_2_##DEC), T(gemv_4_##DEC), T(gemv_8_##DEC)}
#elif VBYTES == 32
#define GM_PASSES 4
#define GEMV_DECS(DEC) GEMV_FN(1, 4, DEC) GEMV_FN(2, 2, DEC) GEMV_FN(4, 1, DEC) GEMV_FN(8, 1, DEC)
#define GEMV_ROW(DEC) {T(gemv_1_##DEC), T(gemv_2_##DEC), T(gemv_4_##DEC), T(gemv_8_##DEC)}
#else
#define GM_PASSES 3
#define GEMV_DECS(DEC) GEMV_FN(1, 4, DEC) GEMV_FN(2, 2, DEC) GEMV_FN(4, 1, DEC)
#define GEMV_ROW(DEC) {T(gemv_1_##DEC), T(gemv_2_##DEC), T(gemv_4_##DEC)}
#endif
GEMV_DECS(GM_FLOAT)
GEMV_DECS(GM_INT8)
GEMV_DECS(GM_TAB16)
GEMV_DECS(GM_NIB)
GEMV_DECS(GM_FP6)
GEMV_DECS(GM_GATHER)
#undef GEMV_DECS
#undef GEMV_FN

typedef void (*T(gemv_fn))(const gemv_t *, const float *, int64_t, int64_t, int64_t, float *, int64_t, int64_t,
                           uint8_t *);
static const T(gemv_fn) T(gemv_table)[GM_KINDS][GM_PASSES] = {GEMV_ROW(GM_FLOAT), GEMV_ROW(GM_INT8), GEMV_ROW(GM_TAB16),
                                                      GEMV_ROW(GM_NIB), GEMV_ROW(GM_FP6), GEMV_ROW(GM_GATHER)};
#undef GEMV_ROW

/* Output rows [n0, n1) of all M activation rows, in passes of 8 (AVX-512, AVX2), 4, 2 and 1 rows into
 * float32 sums, then the bias and the store. Returns -1 without memory. */
static int T(gemv_range)(const gemv_t *G, const float *xp, int64_t n0, int64_t n1)
{
#if GM_NIBQ
    const int x1 = T(x1_range)(G, xp, n0, n1);
    if (x1) return x1 < 0 ? -1 : 0;
#endif
    const int64_t K = G->K;
    float *part = malloc((G->M * (n1 - n0) + 1) * sizeof(float));
    uint8_t *ubuf = G->dec == GM_FP6 ? malloc(4 * K) : NULL;
    if (!part || (G->dec == GM_FP6 && !ubuf)) {
        free(part), free(ubuf);
        return -1;
    }
    for (int64_t m = 0; m < G->M;) {
        const int64_t left = G->M - m;
        const int i = left >= 8 && GM_PASSES > 3 ? 3 : left >= 4 ? 2 : left >= 2 ? 1 : 0;
        /* FP6 rows are unpacked whole: one chunk */
        const int64_t kc = G->dec == GM_FP6 ? K : gm_chunk(G, (1 << i) * 4);
        for (int64_t kc0 = 0; kc0 < K; kc0 += kc)
            T(gemv_table)[G->dec][i](G, xp, m, n0, n1, part, kc0, kc0 + kc < K ? kc0 + kc : K, ubuf);
        m += 1 << i;
    }
    gm_finish(G, part, n0, n1);
    free(part), free(ubuf);
    return 0;
}

/* Rows [n0, n1) of the dequantized weight into out (row stride K): each code's value times its
 * block's scale in float32, or that rounded to bf16, as the reference dequantize computes it. */
static void T(decode_rows)(const gemv_t *G, int64_t n0, int64_t n1, void *out, int32_t bf16)
{
    const int64_t K = G->K, bn = G->bn, gk = (K + bn - 1) / bn;
    T(vf) tab[NTAB];
    memcpy(tab, G->tab16, sizeof tab < 64 ? sizeof tab : 64);
    const int packed = G->dec == GM_NIB || G->dec == GM_FP6;
    uint8_t *ubuf = packed ? malloc(K) : NULL;
    const int dec = G->dec == GM_NIB ? GM_TAB16 : G->dec;
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t *row = G->codes + n * G->row_bytes;
        if (G->dec == GM_NIB) gm_unpack4(row, K, ubuf);
        if (G->dec == GM_FP6) gm_unpack6(row, K, ubuf);
        if (packed) row = ubuf;
        const float *srow = G->sgrid + (n / G->bm) * gk;
        float *o32 = (float *)out + (n - n0) * K;
        uint16_t *o16 = (uint16_t *)out + (n - n0) * K;
        for (int64_t j = 0; j < gk; j++) {
            const int64_t k0 = j * bn, k1 = k0 + bn < K ? k0 + bn : K;
            const float s = srow[j];
            int64_t k = k0;
            for (; k + GL <= k1; k += GL) {
                T(vf) v;
                switch (dec) {  /* the switch is hoisted out of the loop by the compiler */
                case GM_FLOAT: v = T(dec_float)(row + k, G); break;
                case GM_FP6: v = T(dec_fp6)(row + k, G); break;
                case GM_INT8: v = T(dec_int8)(row + k, G); break;
                case GM_TAB16: v = T(lut16)(tab, (T(vi))(T(load_bytes)(row + k) & 15)); break;
                default: v = T(dec_gather)(row + k, G);
                }
                v *= s;
                if (bf16) {
                    const T(vu) u = (T(vu))v;  /* finite: round to nearest even */
                    const T(vh) h = __builtin_convertvector((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16, T(vh));
                    memcpy(o16 + k, &h, sizeof h);
                } else {
                    memcpy(o32 + k, &v, sizeof v);
                }
            }
            for (; k < k1; k++) {
                const float v = G->lut[row[k]] * s;
                if (bf16) o16[k] = gm_bf16(v);
                else o32[k] = v;
            }
        }
    }
    free(ubuf);
}

#undef NTAB
#undef GM_PASSES
#undef GM_NIBQ
#undef UNROLL
#undef GL
/* the including tier's macros (gemm.c) */
#undef T
#undef VBYTES
#undef GFMA
#undef GATHER
#undef LOAD_U8
#undef LOAD_S8
#undef LOAD_U8_TWICE

/* AVX2 GEMV for one activation row (decode at M = 1), included by gemm.h for the AVX2 tier only.
 *
 * The generic body (gemm.h: gemv_body) spends most of its time decoding, not multiplying: per 8 FP8
 * codes a widening load, a shift by a register count, an and, a multiply by 2^(127 - bias) and the
 * FMA, plus a prefetch per 8 bytes. At M = 1 the activation row is small, so two things move out of
 * the inner loops here:
 *
 * - GM_FLOAT: x' = x * 2^(127 - bias) once per call (prep), so a code's float32 field pattern v' (the
 *   value times 2^-(127 - bias), exact, a float32 subnormal for the format's subnormals) multiplies x'
 *   directly: x' v' is the same real number as x v, so every product and sum rounds as in gemv_body.
 *   Taken only where every x' is finite; otherwise gemv_body runs. The shift is an immediate for the
 *   usual field widths, eight accumulators (four rows, two chains each) and one prefetch per 32 bytes.
 * - GM_NIB with bf16 values (E2M1): 16 bytes (32 codes) loaded into both halves; a per-lane shift
 *   count takes the low nibbles into the lower half and the high nibbles into the upper one (no
 *   insert), two vpshufb give the values' bf16 bytes, one interleave per 16 codes makes bf16 words and
 *   a shift / an and split each dword's two words into float32 lanes (instead of four more unpacks).
 *   The activations are permuted once per call to the resulting order (x1_perm).
 *
 * prep (x1_prep) writes the mode it chose after the M * K activations (fp8_gemv's buffer has a spare
 * cache line), and range (x1_range) reads it, so the two always agree. */

enum { X1_NONE = 0, X1_FOLD = 0x46304C44, X1_FOLDW = 0x46304C57, X1_NIB = 0x4E494231 };  /* unlikely words: never stale data */

static inline float T(x1_hsum)(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* whether the 4-bit path applies: whole 32-code groups, blocks along K of 16 or a multiple of 32 (or
 * whole rows), and table values that are bf16 values */
static inline int T(x1_nib_ok)(const gemv_t *G, __m256i *tlo, __m256i *thi)
{
    const int64_t bn = G->bn < G->K ? G->bn : G->K;
    return G->M == 1 && G->dec == GM_NIB && G->K % 32 == 0 && (bn == 16 || bn % 32 == 0) &&
           T(nib_tables)(G, tlo, thi);
}

/* position in the natural order of the activation that lane l of vector q of a 32-code group meets
 * (T(x1_nib4)'s order) */
static inline int64_t T(x1_perm)(int q, int l) { return 16 * (q >> 1) + 4 * (l & 3) + 2 * (q & 1) + (l >> 2); }

/* whether the folded FP8 codes decode 32 at a time in 16-bit lanes (x1_f8w): E4M3 / E5M2 fields, whole
 * 32-code groups that never straddle a block */
static inline int T(x1_wide_ok)(const gemv_t *G)
{
    const int64_t bn = G->bn < G->K ? G->bn : G->K;
    return (G->lsh == 20 || G->lsh == 21) && G->K % 32 == 0 && bn % 32 == 0;
}

/* position in a 32-code group of the code that lane l of x1_f8w's vector q holds */
static const int T(x1_wperm)[4] = {0, 2, 1, 3};

/* The activation row as float32 into xp (M = 1), folded or permuted; returns 1 where done (the mode
 * word written after it), 0 to leave it to prep_x (the word then says X1_NONE). */
static int T(x1_prep)(const gemv_t *G, float *restrict xp)
{
    if (G->M != 1) return 0;
    const int64_t K = G->K;
    uint32_t *mode = (uint32_t *)(xp + K);
    *mode = X1_NONE;
    __m256i tlo, thi;
    const int nib = T(x1_nib_ok)(G, &tlo, &thi);
    const int fold = G->dec == GM_FLOAT && G->fmul >= 1.0f && K % 8 == 0 && (G->bn >= K || G->bn % 16 == 0);
    if (!nib && !fold) return 0;
    float *o = xp;
    if (G->x_bf16)
        for (int64_t k = 0; k < K; k++) o[k] = gm_u2f((uint32_t)((const uint16_t *)G->x)[k] << 16);
    else
        memcpy(o, G->x, K * sizeof(float));
    if (nib) {
        for (int64_t k = 0; k < K; k += 32) {
            float v[32];
            memcpy(v, o + k, sizeof v);
            for (int q = 0; q < 4; q++)
                for (int l = 0; l < 8; l++) o[k + 8 * q + l] = v[T(x1_perm)(q, l)];
        }
        *mode = X1_NIB;
        return 1;
    }
    /* fold: x * 2^(127 - bias), exact where finite (fmul >= 1: no underflow); prep runs outside gemv_part's
     * FP_ENTER, so subnormal x are kept here too (a caller's DAZ would read them as zero) */
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr & ~0x8040u);
    const __m256 f = _mm256_set1_ps(G->fmul), inf = _mm256_set1_ps(__builtin_inff());
    __m256 bad = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k += 8) {
        const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(o + k), f);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), v), inf, _CMP_NLT_UQ));
        _mm256_storeu_ps(o + k, v);
    }
    _mm_setcsr(csr);
    if (_mm256_movemask_ps(bad)) {  /* an Inf or NaN (or an overflow): undo, gemv_body's own path */
        if (G->x_bf16)
            for (int64_t k = 0; k < K; k++) o[k] = gm_u2f((uint32_t)((const uint16_t *)G->x)[k] << 16);
        else
            memcpy(o, G->x, K * sizeof(float));
        return 1;
    }
    *mode = X1_FOLD;
    if (T(x1_wide_ok)(G)) {
        for (int64_t k = 0; k < K; k += 32) {
            float v[32];
            memcpy(v, o + k, sizeof v);
            for (int q = 0; q < 4; q++)
                for (int l = 0; l < 8; l++) o[k + 8 * q + l] = v[4 * l + T(x1_wperm)[q]];
        }
        *mode = X1_FOLDW;
    }
    return 1;
}

/* 8 codes' float32 field patterns (gemm.h: dec_float without the multiply); LSH 0: G->lsh at run time */
static inline __attribute__((always_inline)) __m256 T(x1_f8)(const uint8_t *p, __m256i keep, __m128i cnt,
                                                               const int LSH)
{
    const __m256i c = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_and_si256(LSH ? _mm256_slli_epi32(c, LSH) : _mm256_sll_epi32(c, cnt), keep));
}

/* 32 codes' float32 field patterns from 16-bit lanes: a word's high byte (codes 4j + 1, 4j + 3) arithmetic-
 * shifted right by 24 - LSH puts the code's fields at their bf16 place (the low byte's bits below them are
 * masked off); the low byte (codes 4j, 4j + 2) first moves up. Then the even word of each dword to the
 * top (a shift), the odd one kept by the mask: v[q] lane j holds code 4 j + x1_wperm[q]. */
static inline __attribute__((always_inline)) void T(x1_f8w)(const uint8_t *p, __m256i klo, __m256i khi,
                                                            const int LSH, __m256 *v)
{
    const __m256i w = _mm256_loadu_si256((const __m256i *)p);
    const __m256i h = _mm256_srai_epi16(w, 24 - LSH), l = _mm256_srai_epi16(_mm256_slli_epi16(w, 8), 24 - LSH);
    v[0] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(l, klo), 16));
    v[1] = _mm256_castsi256_ps(_mm256_and_si256(l, khi));
    v[2] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(h, klo), 16));
    v[3] = _mm256_castsi256_ps(_mm256_and_si256(h, khi));
}

/* Rows [n0, n1) of GM_FLOAT codes [kc0, kc1), x folded: NR rows at a time (the caller runs the rest
 * with NR = 1), a block's products in two chains per row, folded into the row's total with the block's
 * scale. part: as gemv_body's (column n - n0), added to after the first chunk. */
static inline __attribute__((always_inline)) void T(x1_float_body)(const gemv_t *G, const float *xp, int64_t n0,
                                                                   int64_t n1, int64_t pbase, float *part,
                                                                   int64_t kc0, int64_t kc1, const int NR,
                                                                   const int LSH, const int WIDE)
{
    const int64_t K = G->K, bn = G->bn < K ? G->bn : K, gk = (K + bn - 1) / bn;
    const __m256i keep = _mm256_set1_epi32((int)G->keep);
    const __m128i cnt = _mm_cvtsi32_si128(G->lsh);
    const __m256i klo = _mm256_set1_epi32((int)(G->keep >> 16)), khi = _mm256_set1_epi32((int)(G->keep & 0xFFFF0000u));
    for (int64_t n = n0; n + NR <= n1; n += NR) {
        const uint8_t *row[4];
        const float *srow[4];
        const int64_t ahead = NR * G->row_bytes;
        for (int r = 0; r < NR; r++) {
            row[r] = G->codes + (n + r) * G->row_bytes;
            srow[r] = G->sgrid + ((n + r) / G->bm) * gk;
        }
        __m256 tot[4];
        for (int r = 0; r < NR; r++) tot[r] = _mm256_setzero_ps();
        for (int64_t k = kc0; k < kc1;) {
            const int64_t j = k / bn, k1 = (j + 1) * bn < kc1 ? (j + 1) * bn : kc1;
            __m256 a[4], b[4];
            for (int r = 0; r < NR; r++) a[r] = b[r] = _mm256_setzero_ps();
            for (; k + 32 <= k1; k += 32) {
                const __m256 x0 = _mm256_loadu_ps(xp + k), x1 = _mm256_loadu_ps(xp + k + 8);
                const __m256 x2 = _mm256_loadu_ps(xp + k + 16), x3 = _mm256_loadu_ps(xp + k + 24);
                for (int r = 0; r < NR; r++) {
                    __builtin_prefetch(row[r] + ahead + k);
                    if (WIDE) {
                        __m256 v[4];
                        T(x1_f8w)(row[r] + k, klo, khi, LSH, v);
                        a[r] = _mm256_fmadd_ps(x0, v[0], a[r]), b[r] = _mm256_fmadd_ps(x1, v[1], b[r]);
                        a[r] = _mm256_fmadd_ps(x2, v[2], a[r]), b[r] = _mm256_fmadd_ps(x3, v[3], b[r]);
                        continue;
                    }
                    a[r] = _mm256_fmadd_ps(x0, T(x1_f8)(row[r] + k, keep, cnt, LSH), a[r]);
                    b[r] = _mm256_fmadd_ps(x1, T(x1_f8)(row[r] + k + 8, keep, cnt, LSH), b[r]);
                    a[r] = _mm256_fmadd_ps(x2, T(x1_f8)(row[r] + k + 16, keep, cnt, LSH), a[r]);
                    b[r] = _mm256_fmadd_ps(x3, T(x1_f8)(row[r] + k + 24, keep, cnt, LSH), b[r]);
                }
            }
            for (; k + 8 <= k1; k += 8) {
                const __m256 x0 = _mm256_loadu_ps(xp + k);
                for (int r = 0; r < NR; r++) a[r] = _mm256_fmadd_ps(x0, T(x1_f8)(row[r] + k, keep, cnt, LSH), a[r]);
            }
            for (int r = 0; r < NR; r++) {
                const float s = srow[r][j];
                tot[r] = _mm256_fmadd_ps(_mm256_add_ps(a[r], b[r]), _mm256_set1_ps(s), tot[r]);
            }
            k = k1;  /* K % 8 == 0 and bn a multiple of 16 (or K): no scalar tail */
        }
        for (int r = 0; r < NR; r++) {
            float *o = part + n + r - pbase;
            *o = (kc0 ? *o : 0.0f) + T(x1_hsum)(tot[r]);
        }
    }
}

static __attribute__((noinline)) void T(x1_float)(const gemv_t *G, const float *xp, int64_t n0, int64_t n1,
                                                  float *part, int64_t kc0, int64_t kc1, int wide)
{
    const int64_t nf = n0 + (n1 - n0) / 4 * 4;
#define X1_F(LSH, WIDE)                                                                \
    T(x1_float_body)(G, xp, n0, nf, n0, part, kc0, kc1, 4, LSH, WIDE);                \
    T(x1_float_body)(G, xp, nf, n1, n0, part, kc0, kc1, 1, LSH, WIDE)
    /* E4M3 (3 mantissa bits) and E5M2 (2): the shifts as immediates */
    if (wide && G->lsh == 20) {
        X1_F(20, 1);
    } else if (wide) {
        X1_F(21, 1);
    } else if (G->lsh == 20) {
        X1_F(20, 0);
    } else if (G->lsh == 21) {
        X1_F(21, 0);
    } else {
        X1_F(0, 0);
    }
#undef X1_F
}

/* 32 4-bit codes (16 bytes) into four vectors of float32 in T(x1_perm)'s order */
static inline __attribute__((always_inline)) void T(x1_nib4)(const uint8_t *p, __m256i tlo, __m256i thi,
                                                             __m256i sh, __m256i m15, __m256i hiw, __m256 *v)
{
    const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    const __m256i idx = _mm256_and_si256(_mm256_srlv_epi32(b, sh), m15);  /* low nibbles | high nibbles */
    const __m256i lo = _mm256_shuffle_epi8(tlo, idx), hi = _mm256_shuffle_epi8(thi, idx);
    const __m256i w0 = _mm256_unpacklo_epi8(lo, hi), w1 = _mm256_unpackhi_epi8(lo, hi);
    v[0] = _mm256_castsi256_ps(_mm256_slli_epi32(w0, 16)), v[1] = _mm256_castsi256_ps(_mm256_and_si256(w0, hiw));
    v[2] = _mm256_castsi256_ps(_mm256_slli_epi32(w1, 16)), v[3] = _mm256_castsi256_ps(_mm256_and_si256(w1, hiw));
}

/* Rows [n0, n1) of GM_NIB codes [kc0, kc1), x permuted: NR rows at a time, 32 codes a step; BS 16 (NVFP4):
 * each half's sum times its scale; BS 32 (MXFP4): the step's sum times the scale; BS 0 (longer blocks,
 * whole rows): the steps' sums, then the scale at the block's end. */
static inline __attribute__((always_inline)) void T(x1_nib_body)(const gemv_t *G, const float *xp, int64_t n0,
                                                                 int64_t n1, int64_t pbase, float *part,
                                                                 int64_t kc0, int64_t kc1, __m256i tlo,
                                                                 __m256i thi, const int NR, const int BS)
{
    const int64_t K = G->K, bn = G->bn < K ? G->bn : K, gk = (K + bn - 1) / bn;
    const __m256i sh = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4), m15 = _mm256_set1_epi8(15);
    const __m256i hiw = _mm256_set1_epi32((int)0xFFFF0000u);
    for (int64_t n = n0; n + NR <= n1; n += NR) {
        const uint8_t *row[4];
        const float *srow[4], *snext[4];
        const int64_t ahead = NR * G->row_bytes;
        for (int r = 0; r < NR; r++) {
            row[r] = G->codes + (n + r) * G->row_bytes;
            srow[r] = G->sgrid + ((n + r) / G->bm) * gk;
            snext[r] = G->sgrid + ((n + r + NR < G->N ? n + r + NR : n + r) / G->bm) * gk;  /* prefetched only */
        }
        __m256 tot[4];
        for (int r = 0; r < NR; r++) tot[r] = _mm256_setzero_ps();
        if (BS == 16 || BS == 32) {
            for (int64_t k = kc0; k < kc1; k += 32) {
                const __m256 x0 = _mm256_load_ps(xp + k), x1 = _mm256_load_ps(xp + k + 8);
                const __m256 x2 = _mm256_load_ps(xp + k + 16), x3 = _mm256_load_ps(xp + k + 24);
                for (int r = 0; r < NR; r++) {
                    __m256 v[4];
                    if (!(k & 127)) __builtin_prefetch(row[r] + ahead + k / 2), __builtin_prefetch(snext[r] + k / BS);
                    T(x1_nib4)(row[r] + k / 2, tlo, thi, sh, m15, hiw, v);
                    const __m256 p0 = _mm256_fmadd_ps(x1, v[1], _mm256_mul_ps(x0, v[0]));
                    if (BS == 16) {
                        const __m256 p1 = _mm256_fmadd_ps(x3, v[3], _mm256_mul_ps(x2, v[2]));
                        tot[r] = _mm256_fmadd_ps(p1, _mm256_broadcast_ss(srow[r] + k / 16 + 1),
                                                 _mm256_fmadd_ps(p0, _mm256_broadcast_ss(srow[r] + k / 16), tot[r]));
                    } else {
                        const __m256 p = _mm256_fmadd_ps(x3, v[3], _mm256_fmadd_ps(x2, v[2], p0));
                        tot[r] = _mm256_fmadd_ps(p, _mm256_broadcast_ss(srow[r] + k / 32), tot[r]);
                    }
                }
            }
        } else {
            for (int64_t k = kc0; k < kc1;) {
                const int64_t j = k / bn, k1 = (j + 1) * bn < kc1 ? (j + 1) * bn : kc1;
                __m256 a[4];
                for (int r = 0; r < NR; r++) a[r] = _mm256_setzero_ps();
                for (; k < k1; k += 32) {
                    const __m256 x0 = _mm256_load_ps(xp + k), x1 = _mm256_load_ps(xp + k + 8);
                    const __m256 x2 = _mm256_load_ps(xp + k + 16), x3 = _mm256_load_ps(xp + k + 24);
                    for (int r = 0; r < NR; r++) {
                        __m256 v[4];
                        if (!(k & 127)) __builtin_prefetch(row[r] + ahead + k / 2);
                        T(x1_nib4)(row[r] + k / 2, tlo, thi, sh, m15, hiw, v);
                        const __m256 p = _mm256_fmadd_ps(x3, v[3], _mm256_fmadd_ps(x2, v[2], _mm256_fmadd_ps(x1, v[1], _mm256_mul_ps(x0, v[0]))));
                        a[r] = _mm256_add_ps(a[r], p);
                    }
                }
                for (int r = 0; r < NR; r++) {
                    if (!(j & 15)) __builtin_prefetch(snext[r] + j);
                    tot[r] = _mm256_fmadd_ps(a[r], _mm256_broadcast_ss(srow[r] + j), tot[r]);
                }
            }
        }
        for (int r = 0; r < NR; r++) {
            float *o = part + n + r - pbase;
            *o = (kc0 ? *o : 0.0f) + T(x1_hsum)(tot[r]);
        }
    }
}

static __attribute__((noinline)) void T(x1_nib)(const gemv_t *G, const float *xp, int64_t n0, int64_t n1,
                                                float *part, int64_t kc0, int64_t kc1, __m256i tlo, __m256i thi)
{
    const int64_t nf = n0 + (n1 - n0) / 4 * 4;
    if (G->bn == 16 && G->bn < G->K) {
        T(x1_nib_body)(G, xp, n0, nf, n0, part, kc0, kc1, tlo, thi, 4, 16);
        T(x1_nib_body)(G, xp, nf, n1, n0, part, kc0, kc1, tlo, thi, 1, 16);
    } else if (G->bn == 32 && G->bn < G->K) {
        T(x1_nib_body)(G, xp, n0, nf, n0, part, kc0, kc1, tlo, thi, 4, 32);
        T(x1_nib_body)(G, xp, nf, n1, n0, part, kc0, kc1, tlo, thi, 1, 32);
    } else {
        T(x1_nib_body)(G, xp, n0, nf, n0, part, kc0, kc1, tlo, thi, 4, 0);
        T(x1_nib_body)(G, xp, nf, n1, n0, part, kc0, kc1, tlo, thi, 1, 0);
    }
}

/* Output rows [n0, n1) at M = 1 where x1_prep chose a mode: chunks along K as gemv_range's, then the
 * bias and the store. Returns 1 where done, 0 to leave the call to gemv_range, -1 without memory. */
static int T(x1_range)(const gemv_t *G, const float *xp, int64_t n0, int64_t n1)
{
    if (G->M != 1) return 0;
    const uint32_t mode = *(const uint32_t *)(xp + G->K);
    if (mode != X1_FOLD && mode != X1_FOLDW && mode != X1_NIB) return 0;
    __m256i tlo, thi;
    if (mode == X1_NIB && !T(x1_nib_ok)(G, &tlo, &thi)) return 0;
    float *part = malloc((n1 - n0 + 1) * sizeof(float));
    if (!part) return -1;
    const int64_t K = G->K, kc = gm_chunk(G, 4);
    for (int64_t kc0 = 0; kc0 < K; kc0 += kc) {
        const int64_t kc1 = kc0 + kc < K ? kc0 + kc : K;
        if (mode != X1_NIB) T(x1_float)(G, xp, n0, n1, part, kc0, kc1, mode == X1_FOLDW);
        else T(x1_nib)(G, xp, n0, n1, part, kc0, kc1, tlo, thi);
    }
    gm_finish(G, part, n0, n1);
    free(part);
    return 1;
}

/* NVFP4 codes of a bf16 row by cell table (AVX-512 BW; native.c includes this in its avx512 section).
 *
 * The reference encodes y = fl(x * mul) in float32. For a format with at most one mantissa bit (FP4
 * E2M1) every rounding boundary (midpoints, ties) has at most three significant bits, so the code of
 * |y| is a function of its cell: the float32 bits shifted right by 20 with the lower 20 bits' OR as the
 * last bit (exponent, two mantissa bits, sticky). `codec/native.py: cells` tabulates 64 consecutive
 * cells from the reference encoder and checks that each is constant; cells below the table code like
 * its first entry. Per 32 elements: one multiply per 16 lanes (bf16 widened by an interleave with
 * zero, which packus undoes), the cell in three operations, one saturating subtract and one 64-entry
 * word permute (vpermt2w) for the magnitude, the sign or-ed in from x. */

/* Whether the table covers every scaled value of the row: its largest is max_j amax_j * mul_j. */
static inline int nvfp4_cells_fit(const quant_t *Q, const uint32_t *a, const float *mul, int64_t gn)
{
    uint32_t ymax = 0;
    for (int64_t j = 0; j < gn; j++) {
        const uint32_t v = f2u(u2f(a[j]) * mul[j]);
        ymax = v > ymax ? v : ymax;
    }
    return ((ymax >> 20) | 1u) <= (uint32_t)Q->cell_base + 63u;
}

/* Codes of one bf16 row (N a multiple of 128) from its block multipliers; 0 where the table does not
 * apply (the caller then runs the lean encoder). pf: the row read next, prefetched. */
static int nvfp4_cells_avx512(const quant_t *Q, const uint16_t *restrict x, uint8_t *restrict o, const uint32_t *a,
                              const float *mul, const uint16_t *pf)
{
    const int64_t N = Q->N, gn = N / 16;
    if (!Q->cells || !nvfp4_cells_fit(Q, a, mul, gn)) return 0;
    const int32_t stream = Q->stream;
    const __m512i tlo = _mm512_loadu_si512(Q->cell_tab), thi = _mm512_loadu_si512(Q->cell_tab + 32);
    const __m512i absm = _mm512_set1_epi16(0x7FFF), zero = _mm512_setzero_si512();
    const __m512i base = _mm512_set1_epi16((int16_t)Q->cell_base), sgn = _mm512_set1_epi16((int16_t)(1 << Q->fast.sign_shift));
    const __m512i low = _mm512_set1_epi32(0xFFFFF), one = _mm512_set1_epi32(1);
    const __m512i order = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);
    const int sh = 15 - (int)Q->fast.sign_shift;
#define CELL(y) _mm512_mask_or_epi32(_mm512_srli_epi32(y, 20), _mm512_test_epi32_mask(y, low), _mm512_srli_epi32(y, 20), one)
    for (int64_t i = 0; i < N; i += 64) {
        _mm_prefetch((const char *)(pf + i), _MM_HINT_T0);
        _mm_prefetch((const char *)(pf + i) + 64, _MM_HINT_T0);
        __m512i c[2];
        for (int h = 0; h < 2; h++) {
            const __m512i X = _mm512_loadu_si512(x + i + 32 * h), A = _mm512_and_si512(X, absm);
            const int64_t j = (i + 32 * h) >> 4;  /* lanes 0-7 of both halves: block j; 8-15: block j + 1 */
            const __m512 mv = _mm512_shuffle_f32x4(_mm512_set1_ps(mul[j]), _mm512_set1_ps(mul[j + 1]), 0x44);
            const __m512i ylo = _mm512_castps_si512(_mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, A)), mv));
            const __m512i yhi = _mm512_castps_si512(_mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, A)), mv));
            const __m512i idx = _mm512_subs_epu16(_mm512_packus_epi32(CELL(ylo), CELL(yhi)), base);
            const __m512i mag = _mm512_permutex2var_epi16(tlo, idx, thi);
            c[h] = _mm512_ternarylogic_epi32(mag, _mm512_srli_epi16(X, sh), sgn, 0xF8); /* mag | (sign & bit) */
        }
        const __m512i bytes = _mm512_permutexvar_epi64(order, _mm512_packus_epi16(c[0], c[1]));
        STORE_OUT(o + i, bytes, stream);
    }
#undef CELL
    return 1;
}

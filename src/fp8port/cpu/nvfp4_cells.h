/* NVFP4 codes of a bf16 row by cell table (AVX-512 BW; native.c includes this in its avx512 section).
 *
 * The reference encodes y = fl(x * mul) in float32. For a format with at most one mantissa bit (FP4
 * E2M1) every rounding boundary (midpoints, ties) has at most three significant bits, so the code of
 * |y| is a function of its cell: the float32 bits shifted right by 20 with the lower 20 bits' OR as the
 * last bit (exponent, two mantissa bits, sticky). `codec/native.py: cells` tabulates 64 consecutive
 * cells from the reference encoder and checks that each is constant; cells below the table code like
 * its first entry. Per 32 elements: one multiply per 16 lanes (a 32-bit lane's two bf16 widened apart,
 * the even one by a shift, the odd one by a mask: no shuffle), both cells put back into the lane's
 * 16-bit halves (element order) by a ternary logic and two masked ors, one saturating subtract and one
 * 64-entry word permute (vpermt2w) for the magnitude, the sign or-ed in from x. A step's 8 block
 * multipliers are one load, spread by vpermps. The interleave-and-pack form it replaced took 0.148
 * ns per element in L2 against 0.140 (Zen 4, one thread): fewer shuffles. */

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
 * apply (the caller then runs the lean encoder). pf: the row read next, prefetched into L2 (prefetcht1:
 * 4096x7168 bf16, amax + row pass, one thread, min CPU time, load 4-5, three alternated runs: avx512
 * 0.232-0.275 ns/el with prefetcht0, 0.180-0.219 with prefetcht1; avx2 0.264-0.302 and 0.246-0.295). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2"))) static int nvfp4_cells_avx512(const quant_t *Q, const uint16_t *restrict x, uint8_t *restrict o, const uint32_t *a,
                              const float *mul, const uint16_t *pf)
{
    const int64_t N = Q->N, gn = N / 16;
    if (!Q->cells || !nvfp4_cells_fit(Q, a, mul, gn)) return 0;
    const int32_t stream = Q->stream;
    const __m512i tlo = _mm512_loadu_si512(Q->cell_tab), thi = _mm512_loadu_si512(Q->cell_tab + 32);
    const __m512i abs2 = _mm512_set1_epi32(0x7FFF7FFF), hi16 = _mm512_set1_epi32((int32_t)0xFFFF0000u);
    const __m512i base = _mm512_set1_epi16((int16_t)Q->cell_base), sgn = _mm512_set1_epi16((int16_t)(1 << Q->fast.sign_shift));
    const __m512i low = _mm512_set1_epi32(0xFFFFF), one = _mm512_set1_epi32(1), one_hi = _mm512_set1_epi32(0x10000);
    const __m512i order = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);
    __m512i pick[4]; /* lanes 0-7: block 2s of the 8 in a step, lanes 8-15: block 2s + 1 */
    for (int s = 0; s < 4; s++) pick[s] = _mm512_inserti64x4(_mm512_set1_epi32(2 * s), _mm256_set1_epi32(2 * s + 1), 1);
    const int sh = 15 - (int)Q->fast.sign_shift;
    for (int64_t i = 0; i < N; i += 128) {
        for (int b = 0; b < 256; b += 64) _mm_prefetch((const char *)(pf + i) + b, _MM_HINT_T1);
        const __m512 m8 = _mm512_castps256_ps512(_mm256_loadu_ps(mul + (i >> 4)));
        __m512i c[4];
        for (int s = 0; s < 4; s++) {
            /* a 32-bit lane holds elements 2k (low half) and 2k + 1 (high half) of one block */
            const __m512i X = _mm512_loadu_si512(x + i + 32 * s), A = _mm512_and_si512(X, abs2);
            const __m512 mv = _mm512_permutexvar_ps(pick[s], m8);
            const __m512i ye = _mm512_castps_si512(_mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(A, 16)), mv));
            const __m512i yo = _mm512_castps_si512(_mm512_mul_ps(_mm512_castsi512_ps(_mm512_and_si512(A, hi16)), mv));
            /* cells in 16-bit lanes, in element order: ye >> 20 low, yo >> 20 high, then the sticky bits */
            __m512i cc = _mm512_ternarylogic_epi32(_mm512_srli_epi32(ye, 20), _mm512_srli_epi16(yo, 4), hi16, 0xF8);
            cc = _mm512_mask_or_epi32(cc, _mm512_test_epi32_mask(ye, low), cc, one);
            cc = _mm512_mask_or_epi32(cc, _mm512_test_epi32_mask(yo, low), cc, one_hi);
            const __m512i mag = _mm512_permutex2var_epi16(tlo, _mm512_subs_epu16(cc, base), thi);
            c[s] = _mm512_ternarylogic_epi32(mag, _mm512_srli_epi16(X, sh), sgn, 0xF8); /* mag | (sign & bit) */
        }
        for (int h = 0; h < 2; h++) {
            const __m512i bytes = _mm512_permutexvar_epi64(order, _mm512_packus_epi16(c[2 * h], c[2 * h + 1]));
            STORE_WIDE(o + i + 64 * h, bytes, stream, _mm512_stream_si512((void *)(o + i + 64 * h), bytes));
        }
    }
    return 1;
}

/* The same on AVX2, 16 elements (one block) per step: the cell's sticky bit by an unsigned min, and the
 * 64-entry lookup on bytes as four 16-entry byte shuffles (an index 16k.. 16k + 15 picks from table k; a
 * saturating add of 0x70 sets bit 7, which zeroes the shuffle, on every other index). */
__attribute__((target("avx2"))) static int nvfp4_cells_avx2(const quant_t *Q, const uint16_t *restrict x, uint8_t *restrict o,
                                                           const uint32_t *a, const float *mul, const uint16_t *pf)
{
    const int64_t N = Q->N, gn = N / 16;
    if (!Q->cells || !nvfp4_cells_fit(Q, a, mul, gn)) return 0;
    const int32_t stream = Q->stream;
    int8_t t8[64];
    for (int k = 0; k < 64; k++) t8[k] = (int8_t)Q->cell_tab[k];
    __m256i tab[4];
    for (int k = 0; k < 4; k++) tab[k] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const void *)(t8 + 16 * k)));
    const __m256i absm = _mm256_set1_epi16(0x7FFF), zero = _mm256_setzero_si256(), base = _mm256_set1_epi16((int16_t)Q->cell_base);
    const __m256i low = _mm256_set1_epi32(0xFFFFF), one = _mm256_set1_epi32(1), k70 = _mm256_set1_epi8(0x70);
    const __m256i k16 = _mm256_set1_epi8(16), sgn = _mm256_set1_epi8((char)(1 << Q->fast.sign_shift));
#define CELL(y) _mm256_or_si256(_mm256_srli_epi32(y, 20), _mm256_min_epu32(_mm256_and_si256(y, low), one))
    for (int64_t i = 0; i < N; i += 32) {
        _mm_prefetch((const char *)(pf + i), _MM_HINT_T1);
        __m256i idx[2], neg[2];
        for (int h = 0; h < 2; h++) {
            const __m256i X = _mm256_loadu_si256((const void *)(x + i + 16 * h)), A = _mm256_and_si256(X, absm);
            const __m256 mv = _mm256_set1_ps(mul[(i >> 4) + h]);
            const __m256i ylo = _mm256_castps_si256(_mm256_mul_ps(_mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, A)), mv));
            const __m256i yhi = _mm256_castps_si256(_mm256_mul_ps(_mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, A)), mv));
            idx[h] = _mm256_subs_epu16(_mm256_packus_epi32(CELL(ylo), CELL(yhi)), base);
            neg[h] = _mm256_srai_epi16(X, 15);
        }
        __m256i t = _mm256_packus_epi16(idx[0], idx[1]); /* cells < 64: bytes, lanes interleaved as neg's */
        __m256i mag = _mm256_shuffle_epi8(tab[0], _mm256_adds_epu8(t, k70));
        for (int k = 1; k < 4; k++) {
            t = _mm256_sub_epi8(t, k16);
            mag = _mm256_or_si256(mag, _mm256_shuffle_epi8(tab[k], _mm256_adds_epu8(t, k70)));
        }
        const __m256i c = _mm256_or_si256(mag, _mm256_and_si256(_mm256_packs_epi16(neg[0], neg[1]), sgn));
        const __m256i bytes = _mm256_permute4x64_epi64(c, 0xD8);
        STORE_WIDE(o + i, bytes, stream, memcpy(o + i, &bytes, 32));
    }
#undef CELL
    return 1;
}

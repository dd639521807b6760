/* The E4M3 power-of-two quantizer written for AVX-512 by hand: the avx512 tier's specialization of
 * kernels.h for its most used case (DeepSeek 1x128 / 128x128 and MXFP8, from bf16 or float32); every
 * other element, rule and tier takes the generic kernels. Included by native.c on x86-64.
 *
 * Bit-exact with reference.py by the generic kernels' argument: the block amax is an integer max, the
 * scale comes from the rule's step table, x * 2^-E is one saturating subtraction on the bf16 (or
 * float32) pattern that also rebiases to E4M3, rounding to nearest even is integer arithmetic, and
 * subnormal codes take a variable shift where a vector holds one. Needs E >= -102 (usable_e): other
 * blocks are handed back to the generic kernels.
 */
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

/* max over the 32 unsigned 16-bit lanes */
AVX512 static inline uint16_t hmax_epu16(__m512i v)
{
    __m256i h = _mm256_max_epu16(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
    __m128i q = _mm_max_epu16(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    return (uint16_t)~_mm_cvtsi128_si32(_mm_minpos_epu16(_mm_xor_si128(q, _mm_set1_epi16(-1))));
}

/* Per-block constants of encode32 for a scale 2^E (-102 <= E <= 127; E << 7 fits 16 bits). */
typedef struct { __m512i k, ks, ke; } shift_t;

AVX512 static inline shift_t block_shift(int e7)
{
    /* k: the pattern of 2^E * 2^-7, a binade under E4M3's smallest normal, so that m - k >= 0x80
     * marks the normal range; ks: of 2^E * 2^-10, half the smallest subnormal (at or below it
     * every code is 0); ke: E << 7 itself */
    shift_t t = {_mm512_set1_epi16((short)(e7 + (120 << 7))), _mm512_set1_epi16((short)(e7 + (117 << 7))),
                 _mm512_set1_epi16((short)e7)};
    return t;
}

/* float32 input: the same steps on 16 lanes of 32 bits. k = (120 + E) << 23, ks = (117 + E) << 23,
 * ke = E << 23; m - k cannot overflow (k > 0 for E >= -102), so a max with 0 saturates it. */
typedef struct { __m512i k, ks, ke; } shift32_t;

AVX512 static inline shift32_t block_shift32(int e)
{
    shift32_t t = {_mm512_set1_epi32((e + 120) << 23), _mm512_set1_epi32((e + 117) << 23),
                   _mm512_set1_epi32((int32_t)((uint32_t)e << 23))};
    return t;
}

AVX512 static inline __m512i encode16(__m512i p, shift32_t s, __m512i cap)
{
    const __m512i one = _mm512_set1_epi32(1);
    __m512i m = _mm512_and_si512(p, _mm512_set1_epi32(0x7FFFFFFF));
    __m512i v = _mm512_max_epi32(_mm512_sub_epi32(m, s.k), _mm512_setzero_si512());
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(v, 20), one);
    __m512i nrm = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(v, lsb), _mm512_set1_epi32(0x7FFFF)), 20);
    __mmask16 below = _mm512_cmplt_epu32_mask(v, _mm512_set1_epi32(0x800000));
    __m512i c = _mm512_maskz_min_epi32(~below, nrm, cap);
    __mmask16 sub = _mm512_mask_cmpge_epu32_mask(below, m, s.ks);
    if (sub) {  /* subnormal E4M3: round the 24-bit significand right by 141 - biased exponent */
        __m512i w = _mm512_sub_epi32(m, s.ke);
        __m512i mant = _mm512_or_si512(_mm512_and_si512(w, _mm512_set1_epi32(0x7FFFFF)), _mm512_set1_epi32(0x800000));
        __m512i sh = _mm512_sub_epi32(_mm512_set1_epi32(141), _mm512_srli_epi32(w, 23));
        __m512i half = _mm512_sub_epi32(_mm512_sllv_epi32(one, _mm512_sub_epi32(sh, one)), one);
        __m512i slsb = _mm512_and_si512(_mm512_srlv_epi32(mant, sh), one);
        __m512i sn = _mm512_srlv_epi32(_mm512_add_epi32(mant, _mm512_add_epi32(half, slsb)), sh);
        c = _mm512_mask_mov_epi32(c, sub, sn);
    }
    return _mm512_ternarylogic_epi32(c, _mm512_srli_epi32(p, 24), _mm512_set1_epi32(0x80), 0xF8);
}

AVX512 static inline void encode_span32(const uint32_t *q, uint8_t *c, int64_t n, shift32_t sh, __m512i cap,
                                        int stream, const uint32_t *pf)
{
    /* two packs leave dword j of the line at 4 * (j % 4) + j / 4 */
    const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    int64_t o = 0;
    for (; o + 64 <= n; o += 64) {
        for (int i = 0; i < 64; i += 16) _mm_prefetch((const char *)(pf + o + i), _MM_HINT_T1);
        __m512i c0 = encode16(_mm512_loadu_si512(q + o), sh, cap), c1 = encode16(_mm512_loadu_si512(q + o + 16), sh, cap);
        __m512i c2 = encode16(_mm512_loadu_si512(q + o + 32), sh, cap), c3 = encode16(_mm512_loadu_si512(q + o + 48), sh, cap);
        __m512i pk = _mm512_packus_epi16(_mm512_packus_epi32(c0, c1), _mm512_packus_epi32(c2, c3));
        pk = _mm512_permutexvar_epi32(order, pk);
        if (stream) _mm512_stream_si512((void *)(c + o), pk);
        else _mm512_storeu_si512(c + o, pk);
    }
    for (; o < n; o += 16)
        _mm_storeu_si128((__m128i *)(c + o), _mm512_cvtepi32_epi8(encode16(_mm512_loadu_si512(q + o), sh, cap)));
}

/* max |x| pattern (as float32 bits) over rows [0, nr) of a block of bn at x, row stride N */
AVX512 static inline uint32_t block_amax(const void *x, int f32, int64_t nr, int64_t N, int64_t bn)
{
    if (f32) {
        const uint32_t *q = x;
        __m512i acc = _mm512_setzero_si512();
        for (int64_t r = 0; r < nr; r++)
            for (int64_t k = 0; k < bn; k += 16)
                acc = _mm512_max_epu32(acc, _mm512_and_si512(_mm512_loadu_si512(q + r * N + k), _mm512_set1_epi32(0x7FFFFFFF)));
        return _mm512_reduce_max_epu32(acc);
    }
    const uint16_t *q = x;
    __m512i acc = _mm512_setzero_si512();
    for (int64_t r = 0; r < nr; r++)
        for (int64_t k = 0; k < bn; k += 32)
            acc = _mm512_max_epu16(acc, _mm512_and_si512(_mm512_loadu_si512(q + r * N + k), _mm512_set1_epi16(0x7FFF)));
    return (uint32_t)hmax_epu16(acc) << 16;
}

#define NO_E (-1000)

/* The exponent E of a block this kernel can apply, or NO_E: a non-finite amax or scale, or
 * E < -102 in a non-zero block (a subnormal input would no longer land below every half-step). */
static inline int usable_e(uint32_t a, uint32_t sb)
{
    if (a >= 0x7F800000u || (sb & 0x7FFFFFFFu) >= 0x7F800000u) return NO_E;
    if (a == 0) return 0;  /* an all-zero block codes to signed zeros whatever its scale */
    const int e = sb >= 0x00800000u ? (int)(sb >> 23) - 127 : -127;
    return e < -102 ? NO_E : e;
}

/* E4M3 codes (in 16-bit lanes, sign included) of 32 bf16 patterns p divided by 2^E. One
 * saturating subtraction of k both divides by 2^E and rebiases to E4M3's exponent: the result is
 * code << 4 plus 4 rounding bits for normal E4M3 values, and 0 below them. A bf16 subnormal input (no implicit 1) in a block with E >= -102 lands below ks
 * (code 0), as its value does. */
AVX512 static inline __m512i e4m3_encode32(__m512i p, shift_t s, __m512i cap)
{
    const __m512i one = _mm512_set1_epi16(1), k80 = _mm512_set1_epi16(0x80);
    __m512i m = _mm512_and_si512(p, _mm512_set1_epi16(0x7FFF));
    __m512i v = _mm512_subs_epu16(m, s.k);
    /* normal E4M3: v / 16 rounded half up (mulhrs by 2^11), minus one on a tie with an even quotient */
    __m512i nrm = _mm512_mulhrs_epi16(v, _mm512_set1_epi16(1 << 11));
    nrm = _mm512_mask_sub_epi16(nrm, _mm512_cmpeq_epi16_mask(_mm512_and_si512(v, _mm512_set1_epi16(31)),
                                                              _mm512_set1_epi16(8)), nrm, one);
    __mmask32 below = _mm512_cmplt_epu16_mask(v, k80);
    __m512i c = _mm512_maskz_min_epi16(~below, nrm, cap);
    /* subnormal E4M3 (biased bf16 exponent 117..120 after scaling): rare, so computed only when present */
    __mmask32 sub = _mm512_mask_cmpge_epu16_mask(below, m, s.ks);
    if (sub) {
        __m512i w = _mm512_sub_epi16(m, s.ke);  /* the scaled pattern */
        __m512i mant = _mm512_or_si512(_mm512_and_si512(w, _mm512_set1_epi16(127)), k80);
        __m512i sh = _mm512_sub_epi16(_mm512_set1_epi16(125), _mm512_srli_epi16(w, 7));
        __m512i half = _mm512_sub_epi16(_mm512_sllv_epi16(one, _mm512_sub_epi16(sh, one)), one);
        __m512i slsb = _mm512_and_si512(_mm512_srlv_epi16(mant, sh), one);
        __m512i sn = _mm512_srlv_epi16(_mm512_add_epi16(mant, _mm512_add_epi16(half, slsb)), sh);
        c = _mm512_mask_mov_epi16(c, sub, sn);
    }
    /* c | ((p >> 8) & 0x80) */
    return _mm512_ternarylogic_epi32(c, _mm512_srli_epi16(p, 8), k80, 0xF8);
}

/* Codes of n (a multiple of 32) bf16 patterns q into c, prefetching the span at pf, which the
 * next amax pass reads, so that memory works while this span computes. */
AVX512 static inline void e4m3_encode_span(const uint16_t *q, uint8_t *c, int64_t n, shift_t sh, __m512i cap,
                                         int stream, const uint16_t *pf)
{
    const __m512i order = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);
    int64_t o = 0;
    for (; o + 64 <= n; o += 64) {  /* two vectors packed into one 64-byte line */
        _mm_prefetch((const char *)(pf + o), _MM_HINT_T1);
        _mm_prefetch((const char *)(pf + o + 32), _MM_HINT_T1);
        __m512i c0 = e4m3_encode32(_mm512_loadu_si512(q + o), sh, cap);
        __m512i c1 = e4m3_encode32(_mm512_loadu_si512(q + o + 32), sh, cap);
        __m512i pk = _mm512_permutexvar_epi64(order, _mm512_packus_epi16(c0, c1));
        if (stream) _mm512_stream_si512((void *)(c + o), pk);
        else _mm512_storeu_si512(c + o, pk);
    }
    if (o < n)
        _mm256_storeu_si256((__m256i *)(c + o), _mm512_cvtepi16_epi8(e4m3_encode32(_mm512_loadu_si512(q + o), sh, cap)));
}

/* One block's codes: bf16 (e << 7 on 16-bit lanes) or float32 (e << 23 on 32-bit lanes). */
AVX512 static inline void e4m3_encode_block_rows(const void *x, int f32, uint8_t *c, int64_t nr, int64_t N,
                                               int64_t bn, int e, __m512i cap16, __m512i cap32, int stream,
                                               const void *next)
{
    if (f32) {
        const shift32_t sh = block_shift32(e);
        for (int64_t r = 0; r < nr; r++)
            encode_span32((const uint32_t *)x + r * N, c + r * N, bn, sh, cap32, stream, (const uint32_t *)next + r * N);
    } else {
        const shift_t sh = block_shift(e * 128);
        for (int64_t r = 0; r < nr; r++)
            e4m3_encode_span((const uint16_t *)x + r * N, c + r * N, bn, sh, cap16, stream, (const uint16_t *)next + r * N);
    }
}

/* Row groups [t0, t1) of a quant_t whose element is E4M3 under a power-of-two rule (see e4m3_applies
 * in native.c): x (B, M, N) bf16 bits or float32, bm x bn blocks, bn % 32 == 0, N % bn == 0,
 * N / bn <= 4096. bad_groups[t - t0] = 1 where a block usable_e refuses (left to the generic kernels).
 * Rows of 1 x bn blocks: the amax of the whole row, then its codes (the row stays in L1).
 * bm x bn tiles: one tile at a time, amax then codes (a 128 x 128 bf16 tile is 32 KiB). */
AVX512 static int64_t e4m3_quant_avx512(const quant_t *Q, int64_t t0, int64_t t1, uint8_t *bad_groups)
{
    const int64_t M = Q->M, N = Q->N, bm = Q->bm, bn = Q->bn;
    const int f32 = !Q->bf16, stream = Q->stream;
    const uint32_t *rule = Q->steps;
    const int64_t gm = (M + bm - 1) / bm, gn = N / bn, es = f32 ? 4 : 2;
    int ex[4096];
    int64_t bad = 0;
    const __m512i cap16 = _mm512_set1_epi16((short)Q->pow2.ovf), cap32 = _mm512_set1_epi32((int)Q->pow2.ovf);
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / gm, g = t - b * gm, r0 = g * bm, nr = (r0 + bm < M ? r0 + bm : M) - r0;
        const char *xg = (const char *)Q->x + (b * M + r0) * N * es;
        uint8_t *cg = Q->codes + (b * M + r0) * N;
        float *sg = Q->sgrid + t * gn;
        uint8_t *st = Q->stored_kind == 1 ? Q->stored + t * gn : NULL;
        int isbad = 0;
        if (bm == 1) {
            for (int64_t j = 0; j < gn; j++) {
                const uint32_t a = block_amax(xg + j * bn * es, f32, 1, N, bn), sb = step_scale(rule, a);
                sg[j] = u2f(sb);
                if (st) st[j] = (uint8_t)(sb >> 23);
                ex[j] = usable_e(a, sb);
                isbad |= ex[j] == NO_E;
            }
            for (int64_t j = 0; j < gn && !isbad; j++)  /* prefetch the next row */
                e4m3_encode_block_rows(xg + j * bn * es, f32, cg + j * bn, 1, N, bn, ex[j], cap16, cap32, stream,
                                       xg + (N + j * bn) * es);
        } else {
            for (int64_t j = 0; j < gn && !isbad; j++) {
                const uint32_t a = block_amax(xg + j * bn * es, f32, nr, N, bn), sb = step_scale(rule, a);
                const int e = usable_e(a, sb);
                sg[j] = u2f(sb);
                if (st) st[j] = (uint8_t)(sb >> 23);
                isbad = e == NO_E;
                /* prefetch the next tile: to the right, or the first of the next row group */
                const char *next = j + 1 < gn ? xg + (j + 1) * bn * es : xg + nr * N * es;
                if (!isbad)
                    e4m3_encode_block_rows(xg + j * bn * es, f32, cg + j * bn, nr, N, bn, e, cap16, cap32, stream, next);
            }
        }
        bad_groups[t - t0] = (uint8_t)isbad;
        bad += isbad;
    }
    return bad;
}

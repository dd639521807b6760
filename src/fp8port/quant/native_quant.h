/* Included twice by native.c: the bf16 E4M3 encoder and the quantize driver, for the target
 * QTARGET, with names Q(name); SUBNORMAL_FP16 picks how E4M3 subnormal codes are rounded. */

/* E4M3 codes (in 16-bit lanes, sign included) of 32 bf16 patterns p divided by 2^E. One
 * saturating subtraction of k both divides by 2^E and rebiases to E4M3's exponent: the result is
 * code << 4 plus 4 rounding bits for normal E4M3 values, and 0 below them. A bf16 subnormal input (no implicit 1) in a block with E >= -102 lands below ks
 * (code 0), as its value does. */
QTARGET static inline __m512i Q(encode32)(__m512i p, shift_t s, __m512i cap)
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
#if SUBNORMAL_FP16
        /* w * 2^9 as an fp16 pattern (biased exponent be - 103, mantissa << 3), converted to an
         * integer with round-to-nearest-even: the subnormal code */
        __m512i h = _mm512_slli_epi16(_mm512_sub_epi16(w, _mm512_set1_epi16(103 << 7)), 3);
        c = _mm512_mask_mov_epi16(c, sub, _mm512_cvtph_epi16(_mm512_castsi512_ph(h)));
#else
        __m512i mant = _mm512_or_si512(_mm512_and_si512(w, _mm512_set1_epi16(127)), k80);
        __m512i sh = _mm512_sub_epi16(_mm512_set1_epi16(125), _mm512_srli_epi16(w, 7));
        __m512i half = _mm512_sub_epi16(_mm512_sllv_epi16(one, _mm512_sub_epi16(sh, one)), one);
        __m512i slsb = _mm512_and_si512(_mm512_srlv_epi16(mant, sh), one);
        __m512i sn = _mm512_srlv_epi16(_mm512_add_epi16(mant, _mm512_add_epi16(half, slsb)), sh);
        c = _mm512_mask_mov_epi16(c, sub, sn);
#endif
    }
    /* c | ((p >> 8) & 0x80) */
    return _mm512_ternarylogic_epi32(c, _mm512_srli_epi16(p, 8), k80, 0xF8);
}

/* Codes of n (a multiple of 32) bf16 patterns q into c, prefetching the span at pf, which the
 * next amax pass reads, so that memory works while this span computes. */
QTARGET static inline void Q(encode_span)(const uint16_t *q, uint8_t *c, int64_t n, shift_t sh, __m512i cap,
                                         int stream, const uint16_t *pf)
{
    const __m512i order = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);
    int64_t o = 0;
    for (; o + 64 <= n; o += 64) {  /* two vectors packed into one 64-byte line */
        _mm_prefetch((const char *)(pf + o), _MM_HINT_T0);
        _mm_prefetch((const char *)(pf + o + 32), _MM_HINT_T0);
        __m512i c0 = Q(encode32)(_mm512_loadu_si512(q + o), sh, cap);
        __m512i c1 = Q(encode32)(_mm512_loadu_si512(q + o + 32), sh, cap);
        __m512i pk = _mm512_permutexvar_epi64(order, _mm512_packus_epi16(c0, c1));
        if (stream) _mm512_stream_si512((void *)(c + o), pk);
        else _mm512_storeu_si512(c + o, pk);
    }
    if (o < n)
        _mm256_storeu_si256((__m256i *)(c + o), _mm512_cvtepi16_epi8(Q(encode32)(_mm512_loadu_si512(q + o), sh, cap)));
}

/* One block's codes: bf16 (e << 7 on 16-bit lanes) or float32 (e << 23 on 32-bit lanes). */
QTARGET static inline void Q(encode_block_rows)(const void *x, int f32, uint8_t *c, int64_t nr, int64_t N,
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
            Q(encode_span)((const uint16_t *)x + r * N, c + r * N, bn, sh, cap16, stream, (const uint16_t *)next + r * N);
    }
}

/* Quantize row groups [t0, t1) of x (B, M, N), bf16 bits or float32 (f32), with bm x bn blocks
 * (bn % 32 == 0, N % bn == 0, gn = N / bn <= 4096) into codes (B, M, N) and sgrid
 * (B, ceil(M/bm), gn). Returns the number of groups holding a block usable_e refuses; their
 * outputs are partly written and the caller redoes the tensor with the general kernel.
 * stream: codes are 64-byte aligned and N, bn multiples of 64, so full lines go around the cache.
 * Rows of 1 x bn blocks: the amax of the whole row, then its codes (the row stays in L1).
 * bm x bn tiles: one tile at a time, amax then codes (a 128 x 128 bf16 tile is 32 KiB). */
QTARGET static int64_t Q(fp8_quant_pow2)(const void *x, int32_t f32, int64_t B, int64_t M, int64_t N,
                                         int64_t bm, int64_t bn, const steps_t *rule, int32_t cap_code,
                                         int32_t stream, uint8_t *codes, float *sgrid, int64_t t0, int64_t t1)
{
    const int64_t gm = (M + bm - 1) / bm, gn = N / bn, es = f32 ? 4 : 2;
    int ex[4096];
    int64_t bad = 0;
    const __m512i cap16 = _mm512_set1_epi16((short)cap_code), cap32 = _mm512_set1_epi32(cap_code);
    const char *xc = x;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / gm, g = t - b * gm, r0 = g * bm, nr = (r0 + bm < M ? r0 + bm : M) - r0;
        const char *xg = xc + (b * M + r0) * N * es;
        uint8_t *cg = codes + (b * M + r0) * N;
        float *sg = sgrid + t * gn;
        int isbad = 0;
        if (bm == 1) {
            for (int64_t j = 0; j < gn; j++) {
                const uint32_t a = block_amax(xg + j * bn * es, f32, 1, N, bn), sb = rule_scale(rule, a);
                sg[j] = u2f(sb);
                ex[j] = usable_e(a, sb);
                isbad |= ex[j] == NO_E;
            }
            for (int64_t j = 0; j < gn && !isbad; j++)  /* prefetch the next row */
                Q(encode_block_rows)(xg + j * bn * es, f32, cg + j * bn, 1, N, bn, ex[j], cap16, cap32, stream,
                                     xg + (N + j * bn) * es);
        } else {
            for (int64_t j = 0; j < gn && !isbad; j++) {
                const uint32_t a = block_amax(xg + j * bn * es, f32, nr, N, bn), sb = rule_scale(rule, a);
                const int e = usable_e(a, sb);
                sg[j] = u2f(sb);
                isbad = e == NO_E;
                /* prefetch the next tile: to the right, or the first of the next row group */
                const char *next = j + 1 < gn ? xg + (j + 1) * bn * es : xg + nr * N * es;
                if (!isbad)
                    Q(encode_block_rows)(xg + j * bn * es, f32, cg + j * bn, nr, N, bn, e, cap16, cap32, stream, next);
            }
        }
        bad += isbad;
    }
    if (stream) _mm_sfence();
    return bad;
}

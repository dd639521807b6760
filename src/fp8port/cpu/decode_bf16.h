/* decode_rows' bf16 rows on AVX-512 BF16 (the prefill path's dense bf16 rows): 32 codes a step decoded
 * to float32 (GM_FLOAT: dec_float's arithmetic, the block's scale folded into its 2^(127 - bias)
 * factor where that product is a normal float32; GM_NIB: the 16 values by vpermps), times the scale,
 * and the two vectors rounded to nearest even by one vcvtne2ps2bf16: a third of the generic loop's
 * instructions. That instruction flushes subnormal results, so a step holding one takes gm_bf16's
 * integer rounding (a NaN, gm_bf16 itself): the bytes equal the generic decoder's on every input. Included by gemm.c
 * under a target with avx512bf16; rows whose K is not a multiple of 32 or whose blocks along K are
 * not a multiple of 16 wide take the generic decoder (dr_bf16_ok). */

static inline int dr_bf16_ok(const gemv_t *G)
{
    return (G->dec == GM_FLOAT || G->dec == GM_NIB) && G->K % 32 == 0 && (G->bn % 32 == 0 || G->bn == 16 || G->bn >= G->K);
}

/* codes k..k+15 of a row times the block's factor: GM_NIB by vpermps from the 16 values times the scale
 * (tab), GM_FLOAT by dec_float's arithmetic with its 2^(127 - bias) times the scale (f) */
BF16_TARGET static inline __m512 dr_dec16(const int DEC, const uint8_t *row, int64_t k, const gemv_t *G, __m512 tab,
                                          __m512 f)
{
    if (DEC == GM_NIB) {  /* each byte twice, then the low / high nibble by a per-lane shift */
        const __m128i b = _mm_loadl_epi64((const __m128i *)(row + k / 2));
        const __m512i d = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(b, b));
        const __m512i sh = _mm512_set_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
        return _mm512_permutexvar_ps(_mm512_srlv_epi32(d, sh), tab);  /* vpermps reads the low 4 bits */
    }
    const __m512i t = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(row + k)));
    const __m512i u = _mm512_and_si512(_mm512_slli_epi32(t, G->lsh), _mm512_set1_epi32((int)G->keep));
    return _mm512_mul_ps(_mm512_castsi512_ps(u), f);
}

typedef struct {
    __m512 tab, f;  /* dr_dec16's factors for one block */
    int fast;       /* whether every product is a normal float32, zero or infinite (vcvtne2ps2bf16 rounds it) */
} dr_blk;

/* One block's factors from its scale s; tab: the element's 16 values (GM_NIB); vmin: the smallest nonzero
 * |value| of the element. GM_FLOAT folds s into 2^(127 - bias) where that product is a normal float32 (so
 * one rounding, as value x s). */
BF16_TARGET static inline __attribute__((always_inline)) dr_blk dr_block(const int DEC, const gemv_t *G, float s,
                                                                        __m512 tab, float vmin)
{
    dr_blk b;
    const float a = s < 0 ? -s : s;
    b.fast = (a == 0 || a * vmin >= 0x1p-126f) && a <= 0x1p127f;
    if (DEC == GM_NIB) {
        b.tab = _mm512_mul_ps(tab, _mm512_set1_ps(s)), b.f = tab;
    } else {
        const float f = G->fmul * s;
        const uint32_t e = gm_f2u(f) >> 23 & 0xFF;
        b.fast &= e != 0 && e != 0xFF;
        b.tab = tab, b.f = _mm512_set1_ps(f);
    }
    return b;
}

/* a block's scale, or bf16(s * smul) where smul != 0 (fp8_decode_rows' rounding of its scale grid) */
static inline float dr_s(float s, float smul)
{
    if (smul == 0.0f) return s;
    const uint32_t u = gm_f2u(s * smul);
    const uint32_t r = (u & 0x7FFFFFFFu) > 0x7F800000u ? u | 0x400000u : u + 0x7FFFu + ((u >> 16) & 1u);
    return gm_u2f(r & 0xFFFF0000u);
}

/* codes [k, k + n) of a row one by one (a block whose products may be subnormal: gm_bf16) */
static inline void dr_slow(const gemv_t *G, const uint8_t *row, int64_t k, int64_t n, float s, uint16_t *o)
{
    for (int64_t i = k; i < k + n; i++) {
        const uint8_t c = G->dec == GM_NIB ? (row[i / 2] >> (4 * (i & 1))) & 15 : row[i];
        o[i] = gm_bf16((G->dec == GM_NIB ? G->tab16[c] : G->lut[c]) * s);
    }
}

BF16_TARGET static inline __attribute__((always_inline)) void dr_rows(const int DEC, const gemv_t *G, int64_t n0,
                                                                     int64_t n1, uint16_t *out, float smul)
{
    const __m512 tab = _mm512_loadu_ps(G->tab16);
    const int64_t K = G->K, bn = G->bn >= G->K ? G->K : G->bn, gk = (K + bn - 1) / bn;
    float vmin = 0x1p127f;
    for (int i = 0; i < (DEC == GM_NIB ? 16 : 256); i++) {
        const float v = DEC == GM_NIB ? G->tab16[i] : G->lut[i], a = v < 0 ? -v : v;
        if (a != 0 && a < vmin) vmin = a;
    }
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t *row = G->codes + n * G->row_bytes;
        const float *srow = G->sgrid + (n / G->bm) * gk;
        uint16_t *o = out + (n - n0) * K;
        if (bn == 16) {  /* a step spans two blocks */
            for (int64_t j = 0; j < gk; j += 2) {
                const float sa = dr_s(srow[j], smul), sb = dr_s(srow[j + 1], smul);
                const dr_blk a = dr_block(DEC, G, sa, tab, vmin), b = dr_block(DEC, G, sb, tab, vmin);
                const int64_t k = j * 16;
                if (!(a.fast & b.fast)) {
                    dr_slow(G, row, k, 16, sa, o), dr_slow(G, row, k + 16, 16, sb, o);
                    continue;
                }
                const __m512 p0 = dr_dec16(DEC, row, k, G, a.tab, a.f), p1 = dr_dec16(DEC, row, k + 16, G, b.tab, b.f);
                _mm512_storeu_si512(o + k, (__m512i)_mm512_cvtne2ps_pbh(p1, p0));
            }
            continue;
        }
        for (int64_t j = 0; j < gk; j++) {  /* blocks of a multiple of 32 codes (the last may be short) */
            const float sa = dr_s(srow[j], smul);
            const dr_blk a = dr_block(DEC, G, sa, tab, vmin);
            const int64_t k0 = j * bn, k1 = k0 + bn < K ? k0 + bn : K;
            if (!a.fast) {
                dr_slow(G, row, k0, k1 - k0, sa, o);
                continue;
            }
            for (int64_t k = k0; k < k1; k += 32) {
                const __m512 p0 = dr_dec16(DEC, row, k, G, a.tab, a.f), p1 = dr_dec16(DEC, row, k + 16, G, a.tab, a.f);
                _mm512_storeu_si512(o + k, (__m512i)_mm512_cvtne2ps_pbh(p1, p0));
            }
        }
    }
}

/* Rows [n0, n1) as bf16 bits into out (dr_bf16_ok(G) holds); smul: as fp8_decode_rows' */
BF16_TARGET static void dr_bf16(const gemv_t *G, int64_t n0, int64_t n1, uint16_t *out, float smul)
{
    if (G->dec == GM_NIB) dr_rows(GM_NIB, G, n0, n1, out, smul);
    else dr_rows(GM_FLOAT, G, n0, n1, out, smul);
}

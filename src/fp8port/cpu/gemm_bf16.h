/* The AVX-512 BF16 route of the GEMV (gemm.h): bf16 activations, 32 codes at a time decoded to
 * their bf16 values in registers (exact: the element values have at most 8 significant bits), and
 * vdpbf16ps, which adds pairs of products (exact in float32) to float32 accumulators. Included by
 * gemm.c on x86-64 under a target with avx512bf16; used where the CPU has it, the activations are
 * bf16 and the decoder is GM_FLOAT or GM_NIB (bf16_route).
 *
 * GM_FLOAT: the sign-extended code shifted so that its exponent and mantissa fields land in bf16
 * place, the exponent rebiased by an addition; codes with a zero exponent field (zero and the
 * subnormals, rare in weights) are taken from a table of 32 where a vector holds one. GM_NIB: 16
 * bytes widened twice ([low nibbles, high nibbles]), one vpermw from the 16 values. The activations
 * are copied to bf16 in the decoders' order once per call (bf_prep_x). Each accumulator lane sums
 * codes of one block: blocks of 16 (NVFP4) fold every step with a vector of two scales. */

typedef struct {
    __m512i keep, rebias, expmask, sub, nibshift, tab;
    int32_t sh;
} bf_consts;

BF16_TARGET static inline bf_consts bf_setup(const gemv_t *G)
{
    bf_consts c;
    c.sh = G->bf_sh;
    c.keep = _mm512_set1_epi16((short)G->bf_keep);
    c.rebias = _mm512_set1_epi16((short)G->bf_rebias);
    c.expmask = _mm512_set1_epi16((short)G->bf_expmask);
    c.sub = _mm512_loadu_si512(G->bf_tab);
    c.tab = c.sub;
    c.nibshift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    return c;
}

BF16_TARGET static inline __m512i bf_dec(const int DEC, const uint8_t *row, int64_t k, const bf_consts *c)
{
    if (DEC == GM_NIB) {
        const __m512i w = _mm512_cvtepu8_epi16(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(row + k / 2))));
        return _mm512_permutexvar_epi16(_mm512_srlv_epi16(w, c->nibshift), c->tab);
    }
    const __m512i u = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(row + k)));
    const __m512i t = _mm512_sll_epi16(u, _mm_cvtsi32_si128(c->sh));
    __m512i v = _mm512_add_epi16(_mm512_and_si512(t, c->keep), c->rebias);
    const __mmask32 z = _mm512_testn_epi16_mask(t, c->expmask);
    if (z) {  /* zero exponent field: the table's magnitude and the code's sign */
        const __m512i s = _mm512_and_si512(u, _mm512_set1_epi16((short)0x8000));
        v = _mm512_mask_mov_epi16(v, z, _mm512_or_si512(_mm512_permutexvar_epi16(u, c->sub), s));
    }
    return v;
}

/* lanes of the accumulators whose codes lie in the first 16 of a step's 32 */
#define BF_FIRST(DEC) ((__mmask16)((DEC) == GM_NIB ? 0x0F0F : 0x00FF))

/* the activations as bf16, M rows of K, each whole step of a block in the decoder's order */
static void bf_prep_x(const gemv_t *G, uint16_t *restrict xp)
{
    const int64_t K = G->K, bn = G->bn;
    for (int64_t m = 0; m < G->M; m++) {
        uint16_t *o = xp + m * K;
        memcpy(o, (const uint16_t *)G->x + m * G->ldx, K * 2);
        if (G->dec != GM_NIB) continue;
        const int64_t span = bn >= 32 ? bn : K;  /* blocks of 16 pair up into steps of 32 */
        for (int64_t k0 = 0; k0 < K; k0 += span) {
            const int64_t k1 = k0 + span < K ? k0 + span : K;
            for (int64_t k = k0; k + 32 <= k1; k += 32) {
                uint16_t v[32];
                memcpy(v, o + k, sizeof v);
                for (int i = 0; i < 16; i++) o[k + i] = v[2 * i], o[k + 16 + i] = v[2 * i + 1];
            }
        }
    }
}

/* gemm.h's gemv_body on this route: steps of 32 codes; flat mode (blocks of 16 or 32) folds every step
 * with a vector of the step's scales, block mode once per block (or chunk end) with its scale. */
BF16_TARGET static inline __attribute__((always_inline)) void bf_body(const gemv_t *G, const uint16_t *xp, int64_t m0,
                                                                      int64_t n0, int64_t n1, float *part, int64_t pn,
                                                                      int64_t pbase, int64_t kc0, int64_t kc1,
                                                                      const int MB, const int NR, const int DEC)
{
    const int64_t K = G->K, bn = G->bn, gk = (K + bn - 1) / bn;
    const int flat = bn == 16 || (bn == 32 && bn < K);
    const bf_consts c = bf_setup(G);
    const uint16_t *x0 = xp + m0 * K;
    for (int64_t n = n0; n + NR <= n1; n += NR) {
        const uint8_t *row[4];
        const float *srow[4];
        const int64_t ahead = NR * G->row_bytes;  /* the next group's rows (gemm.h: prefetch_next) */
        BF_UNROLL for (int r = 0; r < NR; r++) {
            row[r] = G->codes + (n + r) * G->row_bytes;
            srow[r] = G->sgrid + ((n + r) / G->bm) * gk;
        }
        __m512 tot[8];
        float ts[8];
        BF_UNROLL for (int i = 0; i < MB * NR; i++) tot[i] = _mm512_setzero_ps(), ts[i] = 0.0f;
        int64_t k = kc0;
        while (k < kc1) {
            const int64_t k1 = flat ? kc1 : ((k / bn + 1) * bn < kc1 ? (k / bn + 1) * bn : kc1);
            __m512 acc[8];
            BF_UNROLL for (int i = 0; i < MB * NR; i++) acc[i] = _mm512_setzero_ps();
            for (; k + 32 <= k1; k += 32) {
                __m512i w[4];
                BF_UNROLL for (int r = 0; r < NR; r++) {
                    __builtin_prefetch(row[r] + ahead + (DEC == GM_NIB ? k / 2 : k));
                    w[r] = bf_dec(DEC, row[r], k, &c);
                }
                BF_UNROLL for (int m = 0; m < MB; m++) {
                    const __m512bh xv = (__m512bh)_mm512_loadu_si512(x0 + m * K + k);
                    BF_UNROLL for (int r = 0; r < NR; r++) acc[m * NR + r] = _mm512_dpbf16_ps(acc[m * NR + r], xv, (__m512bh)w[r]);
                }
                if (flat) {
                    BF_UNROLL for (int r = 0; r < NR; r++) {
                        const __m512 sv = bn == 32 ? _mm512_set1_ps(srow[r][k / 32])
                                                   : _mm512_mask_blend_ps(BF_FIRST(DEC), _mm512_set1_ps(srow[r][k / 16 + 1]),
                                                                          _mm512_set1_ps(srow[r][k / 16]));
                        BF_UNROLL for (int m = 0; m < MB; m++) {
                            tot[m * NR + r] = _mm512_fmadd_ps(acc[m * NR + r], sv, tot[m * NR + r]);
                            acc[m * NR + r] = _mm512_setzero_ps();
                        }
                    }
                }
            }
            BF_UNROLL for (int r = 0; r < NR; r++) {
                if (!flat) {
                    const __m512 sv = _mm512_set1_ps(srow[r][(k1 - 1) / bn]);
                    BF_UNROLL for (int m = 0; m < MB; m++) tot[m * NR + r] = _mm512_fmadd_ps(acc[m * NR + r], sv, tot[m * NR + r]);
                }
                BF_UNROLL for (int m = 0; m < MB; m++)  /* the tail, in natural order */
                    for (int64_t kk = k; kk < k1; kk++) {
                        const uint8_t cd = DEC == GM_NIB ? (row[r][kk / 2] >> (4 * (kk & 1))) & 15 : row[r][kk];
                        ts[m * NR + r] += gm_u2f((uint32_t)x0[m * K + kk] << 16) * G->lut[cd] * srow[r][kk / bn];
                    }
            }
            k = k1;
        }
        BF_UNROLL for (int m = 0; m < MB; m++)
            BF_UNROLL for (int r = 0; r < NR; r++)
            {
                float *o = part + (m0 + m) * pn + n + r - pbase;
                *o = (kc0 ? *o : 0.0f) + (_mm512_reduce_add_ps(tot[m * NR + r]) + ts[m * NR + r]);
            }
    }
}

#define BF_FN(MB, NR, DEC)                                                                                  \
    BF16_TARGET static __attribute__((noinline)) void bf_gemv_##MB##_##DEC(                                 \
        const gemv_t *G, const uint16_t *xp, int64_t m0, int64_t n0, int64_t n1, float *part, int64_t kc0,  \
        int64_t kc1)                                                                                        \
    {                                                                                                       \
        const int64_t nf = n0 + (n1 - n0) / NR * NR;                                                        \
        bf_body(G, xp, m0, n0, nf, part, n1 - n0, n0, kc0, kc1, MB, NR, DEC);                               \
        bf_body(G, xp, m0, nf, n1, part, n1 - n0, n0, kc0, kc1, MB, 1, DEC);                                \
    }
/* GM_FLOAT (block mode) has a pass of 8 rows, one output row at a time (8 block sums and 8 totals in
 * registers): each decoded weight vector serves all 8 activation rows. GM_NIB (flat mode: blocks of 16
 * or 32) measured slower that way than in two passes of 4 rows (more activation loads per product). */
BF_FN(1, 4, GM_FLOAT) BF_FN(2, 4, GM_FLOAT) BF_FN(4, 2, GM_FLOAT) BF_FN(8, 1, GM_FLOAT)
BF_FN(1, 4, GM_NIB) BF_FN(2, 4, GM_NIB) BF_FN(4, 2, GM_NIB)
#undef BF_FN

typedef void (*bf_fn)(const gemv_t *, const uint16_t *, int64_t, int64_t, int64_t, float *, int64_t, int64_t);
static const bf_fn BF_TABLE[2][4] = {  /* passes of 1, 2, 4, 8 rows */
    {bf_gemv_1_GM_FLOAT, bf_gemv_2_GM_FLOAT, bf_gemv_4_GM_FLOAT, bf_gemv_8_GM_FLOAT},
    {bf_gemv_1_GM_NIB, bf_gemv_2_GM_NIB, bf_gemv_4_GM_NIB, NULL}};

static int bf_range(const gemv_t *G, const uint16_t *xp, int64_t n0, int64_t n1)
{
    float *part = malloc((G->M * (n1 - n0) + 1) * sizeof(float));
    if (!part) return -1;
    for (int64_t m = 0; m < G->M;) {
        const int64_t left = G->M - m;
        const int i = left >= 8 && G->dec != GM_NIB ? 3 : left >= 4 ? 2 : left >= 2 ? 1 : 0;
        const int64_t kc = gm_chunk(G, (1 << i) * 2);
        for (int64_t kc0 = 0; kc0 < G->K; kc0 += kc)
            BF_TABLE[G->dec == GM_NIB][i](G, xp, m, n0, n1, part, kc0, kc0 + kc < G->K ? kc0 + kc : G->K);
        m += 1 << i;
    }
    gm_finish(G, part, n0, n1);
    free(part);
    return 0;
}
#undef BF_FIRST

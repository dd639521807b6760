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

/* The folded BF16 route (M = 2-8 on AVX-512 BF16 CPUs without AMX): the AMX route's scale split (S = b c,
 * amx_sgrid = b, amx_c / amx_crow = c; nn/fused.py checks every code's value times b is a normal bf16
 * value, so b folds into the decoded bf16 weights exactly) with vdpbf16ps. No per-block fold of the sums:
 * each accumulator runs over a whole chunk of K, and c multiplies the output once (fs_finish). Passes of
 * MB activation rows by NR output rows (8 x 2 at M = 8: 16 accumulators; each decoded weight vector
 * serves MB rows, each activation vector NR rows). The activations are copied once per call (fs_prep_x)
 * to rows of K rounded up to 32, zero past K, in bf_dec's order per step of 32, so a short last step
 * reads its codes with a masked load (code 0 past K: a finite value times zero).
 * Shared EPYC Zen 4, one thread, CPU time, M = 8, BF16 route -> folded route (medians of 7 interleaved
 * rounds, load 5): 7168->2048 FP8 2.16 -> 1.48 ms, MXFP4 2.40 -> 1.67, NVFP4 2.70 -> 1.80 (bf16 nn.Linear
 * 2.90); SmolLM2's shapes 0.133-0.169 -> 0.105-0.132 ms (576x576 0.063-0.077 -> 0.053-0.059). It then runs
 * at about one vdpbf16ps per cycle at 7168->2048, the bound of this instruction; small K pays more per
 * group of rows (the reductions, the scales' constants). */

/* A weight row's constant while its scales stay (as gemm_amx.h's amx_const): GM_NIB the 32-entry bf16
 * table, the 16 values times b0 (codes k..k+15 of a step) and times b1 (codes k+16..k+31); GM_FLOAT
 * the exponents of the power-of-two scales b0, b1 in bf16 place plus the decoder's rebias. */
BF16_TARGET static inline __m512i fs_const(const int DEC, float b0, float b1, __m512 tab, const bf_consts *c)
{
    if (DEC == GM_NIB) return (__m512i)_mm512_cvtne2ps_pbh(tab * _mm512_set1_ps(b1), tab * _mm512_set1_ps(b0));
    const short e0 = (short)(((int)(gm_f2u(b0) >> 23) - 127) * 128), e1 = (short)(((int)(gm_f2u(b1) >> 23) - 127) * 128);
    const __m512i e = _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_set1_epi16(e0), _mm512_set1_epi16(e1));
    return _mm512_add_epi16(e, c->rebias);
}

/* One row's 32 codes from k (at most `left`, the rest read as code 0) with the scales folded in (rc:
 * fs_const), as bf16 in bf_dec's lane order. GM_FLOAT codes with a zero exponent field take the
 * table's magnitude (of 2^(1 - bias - m) steps) times b by adding b's exponent, where not zero. */
BF16_TARGET static inline __m512i fs_dec(const int DEC, const uint8_t *row, int64_t k, int64_t left, __m512i rc,
                                        const bf_consts *c)
{
    if (DEC == GM_NIB) {
        const __m128i b = left >= 32 ? _mm_loadu_si128((const __m128i *)(row + k / 2))
                                     : _mm_maskz_loadu_epi8((__mmask16)((1u << ((left + 1) / 2)) - 1), row + k / 2);
        const __m512i w = _mm512_cvtepu8_epi16(_mm256_broadcastsi128_si256(b));
        /* lanes 8-15 and 24-31 hold codes 16..31 of the step: table entries 16..31 (times b1) */
        const __m512i hi = _mm512_set_epi64(0x0010001000100010, 0x0010001000100010, 0, 0, 0x0010001000100010,
                                            0x0010001000100010, 0, 0);
        const __m512i idx = _mm512_ternarylogic_epi32(_mm512_srlv_epi16(w, c->nibshift), _mm512_set1_epi16(15), hi, 0xEA);
        return _mm512_permutexvar_epi16(idx, rc);
    }
    const __m256i raw = left >= 32 ? _mm256_loadu_si256((const __m256i *)(row + k))
                                   : _mm256_maskz_loadu_epi8((__mmask32)((1ull << left) - 1), row + k);
    const __m512i u = _mm512_cvtepi8_epi16(raw);
    const __m512i t = _mm512_sll_epi16(u, _mm_cvtsi32_si128(c->sh));
    __m512i v = _mm512_add_epi16(_mm512_and_si512(t, c->keep), rc);
    const __mmask32 z = _mm512_testn_epi16_mask(t, c->expmask);
    if (z) {  /* zero exponent field: the table's magnitude and the code's sign, b's exponent where not zero */
        const __m512i s = _mm512_and_si512(u, _mm512_set1_epi16((short)0x8000));
        const __m512i m = _mm512_permutexvar_epi16(u, c->sub);
        const __mmask32 nz = z & _mm512_test_epi16_mask(m, _mm512_set1_epi16(0x7FFF));
        v = _mm512_mask_mov_epi16(v, z, _mm512_or_si512(m, s));
        v = _mm512_mask_add_epi16(v, nz, v, _mm512_sub_epi16(rc, c->rebias));
    }
    return v;
}

static inline int64_t fs_k32(const gemv_t *G) { return (G->K + 31) / 32 * 32; }


/* the activations as bf16, M rows of fs_k32 (zero past K), each step of 32 in bf_dec's order */
static void fs_prep_x(const gemv_t *G, uint16_t *restrict xp)
{
    const int64_t K = G->K, K32 = fs_k32(G);
    for (int64_t m = 0; m < G->M; m++) {
        uint16_t *o = xp + m * K32;
        memcpy(o, (const uint16_t *)G->x + m * G->ldx, K * 2);
        memset(o + K, 0, (K32 - K) * 2);
        if (G->dec != GM_NIB) continue;
        for (int64_t k = 0; k < K32; k += 32) {
            uint16_t v[32];
            memcpy(v, o + k, sizeof v);
            for (int i = 0; i < 16; i++) o[k + i] = v[2 * i], o[k + 16 + i] = v[2 * i + 1];
        }
    }
}

/* The horizontal sums of 16 vectors in one vector, lane L the sum of a[L], in 45 operations (16
 * separate reductions take about 130): halves, quarters, pairs and single lanes added in four rounds.
 * Lane 4 q + t of the result sums v[4 t + q], so the inputs go in transposed. */
BF16_TARGET static inline __m512 fs_hsum16(const __m512 *a)
{
    __m512 v[16], h[8];
    for (int q = 0; q < 4; q++)
        for (int t = 0; t < 4; t++) v[4 * t + q] = a[4 * q + t];
    for (int i = 0; i < 8; i++)
        h[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
    for (int i = 0; i < 4; i++)
        h[i] = _mm512_add_ps(_mm512_shuffle_f32x4(h[2 * i], h[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(h[2 * i], h[2 * i + 1], 0xDD));
    for (int i = 0; i < 2; i++)
        h[i] = _mm512_add_ps((__m512)_mm512_unpacklo_pd((__m512d)h[2 * i], (__m512d)h[2 * i + 1]),
                             (__m512)_mm512_unpackhi_pd((__m512d)h[2 * i], (__m512d)h[2 * i + 1]));
    return _mm512_add_ps(_mm512_shuffle_ps(h[0], h[1], 0x88), _mm512_shuffle_ps(h[0], h[1], 0xDD));
}

/* Output rows [n0, n1) in groups of NR for activation rows m0 .. m0 + MB - 1 (MB * NR <= 16) over the
 * codes [kc0, kc1) (a multiple of 32 and of the span, or all of K): the sums go to part (rows of pn,
 * column n - pbase), added to it after the first chunk. */
BF16_TARGET static inline __attribute__((always_inline)) void fs_body(const gemv_t *G, const uint16_t *xp, int64_t m0,
                                                                      int64_t n0, int64_t n1, float *part, int64_t pn,
                                                                      int64_t pbase, int64_t kc0, int64_t kc1,
                                                                      const int MB, const int NR, const int DEC)
{
    const int64_t K = G->K, K32 = fs_k32(G), bn = G->bn < K ? G->bn : K32, gk = (K + G->bn - 1) / G->bn;
    const int64_t span = bn == 16 ? 32 : bn, jstep = bn == 16 ? 2 : 1;
    const bf_consts c = bf_setup(G);
    const __m512 tab = _mm512_loadu_ps(G->tab16);
    const uint16_t *x0 = xp + m0 * K32;
    for (int64_t n = n0; n + NR <= n1; n += NR) {
        const uint8_t *row[4];
        const float *srow[4];
        const int64_t ahead = NR * G->row_bytes;  /* the next group's rows (gemm.h: prefetch_next) */
        BF_UNROLL for (int r = 0; r < NR; r++) {
            row[r] = G->codes + (n + r) * G->row_bytes;
            srow[r] = G->amx_sgrid + ((n + r) / G->bm) * gk;
        }
        __m512 acc[16];
        BF_UNROLL for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
        /* spans of steps whose rows keep their scales: a block (blocks of 16: one step of two); the chunk
         * starts on a span boundary (no division per span) */
        for (int64_t k = kc0, j = kc0 / bn; k < kc1; j += jstep) {
            const int64_t kend = k + span < kc1 ? k + span : kc1;
            __m512i rc[4];
            BF_UNROLL for (int r = 0; r < NR; r++)
                rc[r] = fs_const(DEC, srow[r][j], bn == 16 && k + 16 < K ? srow[r][j + 1] : srow[r][j], tab, &c);
            for (; k < kend; k += 32) {
                __m512i w[4];
                BF_UNROLL for (int r = 0; r < NR; r++) {
                    __builtin_prefetch(row[r] + ahead + (DEC == GM_NIB ? k / 2 : k));
                    w[r] = fs_dec(DEC, row[r], k, K - k, rc[r], &c);
                }
                BF_UNROLL for (int m = 0; m < MB; m++) {
                    const __m512bh xv = (__m512bh)_mm512_loadu_si512(x0 + m * K32 + k);
                    BF_UNROLL for (int r = 0; r < NR; r++) acc[m * NR + r] = _mm512_dpbf16_ps(acc[m * NR + r], xv, (__m512bh)w[r]);
                }
            }
        }
        float sum[16];
        _mm512_storeu_ps(sum, fs_hsum16(acc));
        BF_UNROLL for (int m = 0; m < MB; m++)
            BF_UNROLL for (int r = 0; r < NR; r++)
            {
                float *o = part + (m0 + m) * pn + n + r - pbase;
                *o = (kc0 ? *o : 0.0f) + sum[m * NR + r];
            }
    }
}

/* MB activation rows in groups of NR output rows (16 accumulators at most), the last rows of the range
 * one at a time */
#define FS_FN(MB, NR, DEC)                                                                                  \
    BF16_TARGET static __attribute__((noinline)) void fs_gemv_##MB##_##DEC(                                 \
        const gemv_t *G, const uint16_t *xp, int64_t m0, int64_t n0, int64_t n1, float *part, int64_t kc0,  \
        int64_t kc1)                                                                                        \
    {                                                                                                       \
        const int64_t nf = n0 + (n1 - n0) / NR * NR;                                                        \
        fs_body(G, xp, m0, n0, nf, part, n1 - n0, n0, kc0, kc1, MB, NR, DEC);                               \
        fs_body(G, xp, m0, nf, n1, part, n1 - n0, n0, kc0, kc1, MB, 1, DEC);                                \
    }
#define FS_DEC(DEC) FS_FN(1, 4, DEC) FS_FN(2, 4, DEC) FS_FN(3, 4, DEC) FS_FN(4, 4, DEC) FS_FN(5, 2, DEC) \
    FS_FN(6, 2, DEC) FS_FN(7, 2, DEC) FS_FN(8, 2, DEC)
FS_DEC(GM_FLOAT)
FS_DEC(GM_NIB)
#undef FS_DEC
#undef FS_FN

#define FS_ROW(DEC) {fs_gemv_1_##DEC, fs_gemv_2_##DEC, fs_gemv_3_##DEC, fs_gemv_4_##DEC, fs_gemv_5_##DEC, \
                     fs_gemv_6_##DEC, fs_gemv_7_##DEC, fs_gemv_8_##DEC}
static const bf_fn FS_TABLE[2][8] = {FS_ROW(GM_FLOAT), FS_ROW(GM_NIB)};  /* by rows - 1 */
#undef FS_ROW

/* y = part times the output factor c (amx_c or amx_crow), plus the bias, as float32 or rounded to bf16
 * (gm_bf16's rounding, 16 at a time; gm_finish's arithmetic) */
BF16_TARGET static void fs_finish(const gemv_t *G, const float *part, int64_t n0, int64_t n1)
{
    const int64_t nn = n1 - n0;
    const __m512i one = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7FFF), inf = _mm512_set1_epi32(0x7F800000);
    for (int64_t m = 0; m < G->M; m++) {
        const float *p = part + m * nn;
        for (int64_t i = 0; i < nn; i += 16) {
            const __mmask16 k = nn - i >= 16 ? 0xFFFF : (__mmask16)((1u << (nn - i)) - 1);
            const int64_t n = n0 + i;
            const __m512 f = G->amx_crow ? _mm512_maskz_loadu_ps(k, G->amx_crow + n) : _mm512_set1_ps(G->amx_c);
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p + i), f);
            if (G->bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, G->bias + n));
            if (!G->y_bf16) {
                _mm512_mask_storeu_ps((float *)G->y + m * G->ldy + n, k, v);
                continue;
            }
            const __m512i u = _mm512_castps_si512(v);
            const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, half),
                                                                 _mm512_and_si512(_mm512_srli_epi32(u, 16), one)), 16);
            const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_andnot_si512(_mm512_set1_epi32((int)0x80000000u), u), inf);
            const __m512i h = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
            _mm256_mask_storeu_epi16((uint16_t *)G->y + m * G->ldy + n, k, _mm512_cvtepi32_epi16(h));
        }
    }
}

/* One thread's rows [n0, n1) on the folded route: one pass of all M rows, over chunks of K whose
 * activations stay in L2 (all of K up to 16K codes at M = 8: chunks that stay in L1 read each row in
 * pieces, which measured 1.7x slower for MXFP4 at 7168 -> 2048), then fs_finish. Returns -1 without
 * memory. */
#define FS_L2 (256 << 10)
static int fs_range(const gemv_t *G, const uint16_t *xp, int64_t n0, int64_t n1)
{
    const int64_t K32 = fs_k32(G);
    float *part = malloc((G->M * (n1 - n0) + 1) * sizeof(float));
    if (!part) return -1;
    /* a multiple of 32 and of the span (bn: 16 or a multiple of 32 where bn < K) */
    const int64_t unit = G->bn < G->K && G->bn > 32 ? G->bn : 32;
    int64_t kc = FS_L2 / (G->M * 2) / unit * unit;
    kc = kc > unit ? kc : unit;
    for (int64_t kc0 = 0; kc0 < K32; kc0 += kc)
        FS_TABLE[G->dec == GM_NIB][G->M - 1](G, xp, 0, n0, n1, part, kc0, kc0 + kc < K32 ? kc0 + kc : K32);
    fs_finish(G, part, n0, n1);
    free(part);
    return 0;
}
#undef FS_L2

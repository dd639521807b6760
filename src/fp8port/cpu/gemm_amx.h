/* The AMX route of the GEMV (gemm.h) for bf16 activations, up to 16 rows (nn/fused.py: from 3):
 * TDPBF16PS multiplies a tile of 16 weight rows x 32 codes (bf16) with the activations' 32 x M tile
 * into 16 x M float32 sums.
 * Included by gemm.c on x86-64 after gemm_bf16.h (whose decoders it uses) under a target with
 * amx-tile / amx-bf16; used where the CPU and the kernel allow AMX (fp8_gemm_amx) and nn/fused.py
 * gave the plan an AMX scale grid (amx_ok).
 *
 * The weight is the A tile, in its natural row layout: each row's 32 codes decode to one vector of
 * bf16 values with the block scale folded in (exact: nn/fused.py checks that every code's value times
 * b is a normal bf16 value): GM_FLOAT adds the power-of-two b's exponent to the bf16 exponent field;
 * GM_NIB looks the codes up in a 32-entry table, the 16 values times each of the step's two block
 * scales (blocks of 16) or one, rounded to bf16 (exactly). The vectors go to a 2 KB buffer in L1 (two,
 * alternating by step) and from there into the tiles. The activations are the B tile, laid out once per
 * call (amx_prep_x): row r of step s holds, per activation row m, the pair of values the weight vectors
 * hold at lanes 2r, 2r + 1.
 * The float32 tiles of sums stay in their registers over all of K (even and odd steps apart, added at
 * the end), then are multiplied by the output factor c (amx_c, or amx_crow per output row; the scale
 * grid S = b c). */

/* Tile registers (the intrinsics take literal numbers): 0-3 the sums C of the pass's two groups of 16
 * output rows (0, 1) on even steps and (2, 3) on odd ones (four independent chains of TDPBF16PS); 4, 5
 * the groups' weight tiles A; 6 the activations B. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg_t;

static void amx_config(int64_t M)
{
    amx_cfg_t c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 7; t++) c.rows[t] = 16, c.colsb[t] = (uint16_t)(4 * M);  /* C: 16 x M float32, B */
    c.colsb[4] = c.colsb[5] = 64;                                                  /* A: 16 rows x 32 bf16 */
    _tile_loadconfig(&c);
}

/* Which of a step's 32 codes a weight vector holds at `lane`: GM_NIB's decoder gives the even codes,
 * then the odd ones (bf_dec); GM_FLOAT keeps the order. */
static inline int amx_pos(int DEC, int lane)
{
    return DEC == GM_NIB ? (lane < 16 ? 2 * lane : 2 * (lane - 16) + 1) : lane;
}

/* The activations as the B tiles of every step: xv[s][r][m][j] = x[m][32 s + pos(2 r + j)], 0 past K. */
static void amx_prep_x(const gemv_t *G, uint16_t *restrict xv)
{
    const int64_t K = G->K, M = G->M, steps = (K + 31) / 32;
    const uint16_t *x = G->x;
    for (int64_t s = 0; s < steps; s++)
        for (int l = 0; l < 32; l++) {
            const int64_t k = 32 * s + amx_pos(G->dec, l);
            uint16_t *o = xv + s * 32 * M + (l >> 1) * 2 * M + (l & 1);
            for (int64_t m = 0; m < M; m++) o[2 * m] = k < K ? x[m * G->ldx + k] : 0;
        }
}

/* A row's constant while its scales stay: GM_NIB the 32-entry bf16 table, the 16 values times b0
 * (codes k..k+15 of a step) and times b1 (codes k+16..k+31); GM_FLOAT the exponents of the
 * power-of-two scales b0, b1 in bf16 place, to be added to the values' exponent fields. */
AMX_TARGET static inline __m512i amx_const(const int DEC, float b0, float b1, __m512 tab)
{
    if (DEC == GM_NIB) return (__m512i)_mm512_cvtne2ps_pbh(tab * _mm512_set1_ps(b1), tab * _mm512_set1_ps(b0));
    return _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_set1_epi16((short)(((gm_f2u(b0) >> 23) - 127) << 7)),
                                   _mm512_set1_epi16((short)(((gm_f2u(b1) >> 23) - 127) << 7)));
}

/* one row's 32 codes from k (at most `left` of them, the rest read as code 0) with the block scales
 * folded in (rc: amx_const), as bf16 in the weight tile's lane order */
AMX_TARGET static inline __m512i amx_dec(const int DEC, const uint8_t *row, int64_t k, int64_t left, __m512i rc,
                                         const bf_consts *c)
{
    if (DEC == GM_NIB) {
        const __m128i b = left >= 32 ? _mm_loadu_si128((const __m128i *)(row + k / 2))
                                     : _mm_maskz_loadu_epi8((__mmask16)((1u << ((left + 1) / 2)) - 1), row + k / 2);
        const __m512i w = _mm512_cvtepu8_epi16(_mm256_broadcastsi128_si256(b));
        /* lanes 8-15 and 24-31 hold codes 16..31 of the step: table entries 16..31 (times b1) */
        const __m512i hi = _mm512_set_epi64(0x0010001000100010, 0x0010001000100010, 0, 0, 0x0010001000100010,
                                            0x0010001000100010, 0, 0);
        const __m512i nib = _mm512_srlv_epi16(w, c->nibshift);
        const __m512i idx = _mm512_ternarylogic_epi32(nib, _mm512_set1_epi16(15), hi, 0xEA);  /* nib & 15 | hi */
        return _mm512_permutexvar_epi16(idx, rc);
    }
    const __m256i raw = left >= 32 ? _mm256_loadu_si256((const __m256i *)(row + k))
                                   : _mm256_maskz_loadu_epi8((__mmask32)((1ull << left) - 1), row + k);
    const __m512i u = _mm512_cvtepi8_epi16(raw);
    const __m512i t = _mm512_sll_epi16(u, _mm_cvtsi32_si128(c->sh));
    __m512i v = _mm512_add_epi16(_mm512_and_si512(t, c->keep), _mm512_add_epi16(c->rebias, rc));
    const __mmask32 z = _mm512_testn_epi16_mask(t, c->expmask);
    if (z) {  /* zero exponent field: the table's magnitude and the code's sign, scaled where not zero */
        const __m512i s = _mm512_and_si512(u, _mm512_set1_epi16((short)0x8000));
        const __m512i m = _mm512_permutexvar_epi16(u, c->sub);
        const __mmask32 nz = z & _mm512_test_epi16_mask(m, _mm512_set1_epi16(0x7FFF));
        v = _mm512_mask_mov_epi16(v, z, _mm512_or_si512(m, s));
        v = _mm512_mask_add_epi16(v, nz, v, rc);
    }
    return v;
}

/* Output rows [n0, n1) of this call, 32 at a time (two tiles of 16), into part (M rows of n1 - n0). K
 * goes in spans whose rows keep their scales (a block; blocks of 16: one step of two blocks), each row's
 * constant made once per span. */
AMX_TARGET static inline __attribute__((always_inline)) void amx_body(const gemv_t *G, const uint16_t *xv, int64_t n0,
                                                                    int64_t n1, float *part, const int DEC)
{
    const int64_t K = G->K, M = G->M, bn = G->bn, gk = (K + bn - 1) / bn;
    const bf_consts c = bf_setup(G);
    const __m512 tab = _mm512_loadu_ps(G->tab16);
    uint16_t abuf[2][32 * 32] __attribute__((aligned(64)));  /* [step parity][row][code] */
    float cbuf[4][16 * 16] __attribute__((aligned(64)));
    __m512i rc[32];
    for (int64_t n = n0; n < n1; n += 32) {
        const int nr = n1 - n < 32 ? (int)(n1 - n) : 32;
        const uint8_t *row[32];
        const float *srow[32];
        for (int r = 0; r < nr; r++) {
            row[r] = G->codes + (n + r) * G->row_bytes;
            srow[r] = G->amx_sgrid + ((n + r) / G->bm) * gk;
        }
        if (nr < 32) memset(abuf, 0, sizeof abuf);  /* the missing rows stay zero */
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t k = 0; k < K;) {
            const int64_t j = k / bn, span = bn == 16 ? k + 32 : (j + 1) * bn;
            const int64_t kend = span < K ? span : K;
            for (int r = 0; r < nr; r++)
                rc[r] = amx_const(DEC, srow[r][j], bn == 16 && k + 16 < K ? srow[r][j + 1] : srow[r][j], tab);
            for (; k < kend; k += 32) {
                const int odd = (k >> 5) & 1;
                uint16_t *a = abuf[odd];
                for (int r = 0; r < nr; r++) {
                    _mm512_store_si512(a + 32 * r, amx_dec(DEC, row[r], k, K - k, rc[r], &c));
                }
                _tile_loadd(6, xv + (k >> 5) * 32 * M, 4 * M);
                _tile_loadd(4, a, 64);
                _tile_loadd(5, a + 16 * 32, 64);
                if (odd) {
                    _tile_dpbf16ps(2, 4, 6);
                    _tile_dpbf16ps(3, 5, 6);
                } else {
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_dpbf16ps(1, 5, 6);
                }
            }
        }
        _tile_stored(0, cbuf[0], 4 * M);
        _tile_stored(1, cbuf[1], 4 * M);
        _tile_stored(2, cbuf[2], 4 * M);
        _tile_stored(3, cbuf[3], 4 * M);
        for (int r = 0; r < nr; r++) {
            const float f = G->amx_crow ? G->amx_crow[n + r] : G->amx_c;
            const float *c0 = cbuf[r >> 4] + (r & 15) * M, *c1 = cbuf[2 + (r >> 4)] + (r & 15) * M;
            for (int64_t m = 0; m < M; m++) part[m * (n1 - n0) + n + r - n0] = (c0[m] + c1[m]) * f;
        }
    }
}

AMX_TARGET static __attribute__((noinline)) void amx_float(const gemv_t *G, const uint16_t *xv, int64_t n0, int64_t n1,
                                                           float *part)
{
    amx_body(G, xv, n0, n1, part, GM_FLOAT);
}

AMX_TARGET static __attribute__((noinline)) void amx_nib(const gemv_t *G, const uint16_t *xv, int64_t n0, int64_t n1,
                                                         float *part)
{
    amx_body(G, xv, n0, n1, part, GM_NIB);
}

/* One thread's rows [n0, n1) on AMX; returns -1 without memory. */
AMX_TARGET static int amx_range(const gemv_t *G, const uint16_t *xv, int64_t n0, int64_t n1)
{
    float *part = malloc((G->M * (n1 - n0) + 1) * sizeof(float));
    if (!part) return -1;
    amx_config(G->M);
    (G->dec == GM_NIB ? amx_nib : amx_float)(G, xv, n0, n1, part);
    _tile_release();
    gm_finish(G, part, n0, n1);
    free(part);
    return 0;
}

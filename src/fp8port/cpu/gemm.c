/* fp8port's fused weight-only linear kernels: gemm.h compiled once per ISA tier, like native.c does
 * with kernels.h (x86-64: the baseline, AVX2+FMA+F16C, AVX-512 F/BW/VL/DQ; aarch64: NEON), one
 * picked per call by the tier number Python passes (fp8port/cpu/__init__.py). Built into the same
 * extension as native.c (setup.py); the aarch64 driver (driver.c) includes it too.
 *
 *   fp8_gemv:        y = x W^T (+ bias) for a few activation rows (decode), W as codes + scales;
 *   fp8_decode_rows: rows of W dequantized into a caller's buffer (the prefill path multiplies them
 *                    one cache-sized chunk at a time), bit-exact with the reference dequantize.
 */
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

enum { GM_FLOAT, GM_INT8, GM_TAB16, GM_NIB, GM_FP6, GM_GATHER, GM_KINDS };

/* One weight (N x K codes, a bm x bn block grid of float32 scales) and one call's activations. */
typedef struct {
    const uint8_t *codes;       /* N rows of row_bytes */
    int64_t N, K, row_bytes;
    int64_t bm, bn;             /* block extents along N and K (partial blocks at the ends allowed) */
    const float *sgrid;         /* ceil(N / bm) x ceil(K / bn) */
    int32_t dec;                /* GM_* (gemm.h) */
    int32_t lsh, rsh;           /* GM_FLOAT: the sign-extended code << lsh; GM_FP6: code << lsh >> rsh */
    uint32_t keep;              /*   put the magnitude at its float32 place; keep: sign and magnitude bits */
    float fmul;                 /* GM_FLOAT / GM_FP6: 2^(127 - bias); GM_INT8: the value of code 1 */
    float tab16[16];            /* GM_TAB16 / GM_NIB: the values of codes 0..15 */
    const float *lut;           /* the values of codes 0..255 (all finite where used) */
    const float *bias;          /* N float32, or NULL */
    const void *x;              /* M rows of K activations, float32 or bf16 bits, row stride ldx */
    int32_t x_bf16;
    int64_t M, ldx;
    void *y;                    /* M rows of N outputs, float32 or bf16 bits, row stride ldy */
    int32_t y_bf16;
    int64_t ldy;
    /* the AVX-512 BF16 route (gemm_bf16.h) for bf16 activations, where bf16_ok and the CPU has it: */
    int32_t bf16_ok;
    int32_t bf_sh;              /* GM_FLOAT: the sign-extended code << bf_sh & bf_keep + bf_rebias, */
    uint32_t bf_keep, bf_rebias, bf_expmask;  /* bf_tab[code & 31] where code << bf_sh & bf_expmask is 0 */
    uint16_t bf_tab[32];        /* GM_NIB: bf_tab[i] is the value of code i & 15 */
    /* the AMX route (gemm_amx.h) for bf16 activations, where amx_ok and the CPU and kernel allow it: the
     * scale grid S = b c, every code's value times b a normal bf16 value (b a power of two for GM_FLOAT) */
    int32_t amx_ok;
    float amx_c;                /* c: one factor for the output, or */
    const float *amx_sgrid;     /* b, shaped like sgrid */
    const float *amx_crow;      /* N factors, one per output row (or NULL) */
} gemv_t;

static inline float gm_u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t gm_f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* float32 -> bf16 bits, round to nearest even; NaN stays NaN */
static inline uint16_t gm_bf16(float v)
{
    const uint32_t u = gm_f2u(v);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* y[m, n] = part[m, n - n0] + bias[n] for n in [n0, n1), as float32 or rounded to bf16 */
static void gm_finish(const gemv_t *G, const float *part, int64_t n0, int64_t n1)
{
    for (int64_t m = 0; m < G->M; m++)
        for (int64_t n = n0; n < n1; n++) {
            const float v = part[m * (n1 - n0) + n - n0] + (G->bias ? G->bias[n] : 0.0f);
            if (G->y_bf16) ((uint16_t *)G->y)[m * G->ldy + n] = gm_bf16(v);
            else ((float *)G->y)[m * G->ldy + n] = v;
        }
}

static inline uint64_t gm_load64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t gm_load32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint32_t gm_load16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
#if defined(__x86_64__)
/* four bytes zero-extended to 32-bit lanes with SSE2 only */
static inline __m128i gm_widen4_sse2(uint32_t w)
{
    const __m128i z = _mm_setzero_si128();
    return _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128((int)w), z), z);
}
#endif

/* The codes per chunk along K for activation rows of `xbytes` bytes per element in all (rows x element
 * size): their activations take at most GM_L1 bytes, so they stay in L1 while the rows of a thread's
 * range stream past. A multiple of 64 codes (every tier's vector steps) and, where blocks are narrower
 * than the row, of the block (chunks start on block boundaries). */
#define GM_L1 (16 << 10)
static inline int64_t gm_chunk(const gemv_t *G, int64_t xbytes)
{
    const int64_t unit = G->bn < G->K ? (G->bn % 64 ? G->bn * 4 : G->bn) : 64;  /* bn: a multiple of 16 */
    const int64_t kc = GM_L1 / xbytes / unit * unit;
    return kc > unit ? kc : unit;
}

/* K 6-bit codes from a little-endian bit stream (four in three bytes: codec/packing.py BITSTREAM) */
static void gm_unpack6(const uint8_t *restrict p, int64_t K, uint8_t *restrict out)
{
    for (int64_t g = 0; g < K / 4; g++) {
        const uint32_t w = p[3 * g] | (uint32_t)p[3 * g + 1] << 8 | (uint32_t)p[3 * g + 2] << 16;
        out[4 * g] = w & 63, out[4 * g + 1] = (w >> 6) & 63, out[4 * g + 2] = (w >> 12) & 63, out[4 * g + 3] = w >> 18;
    }
}

/* K 4-bit codes, two a byte (low nibble first), into one a byte: 32 at a time in 16-byte vectors (the
 * byte interleave is punpcklbw / zip1 on every tier), the odd end by bytes */
typedef uint8_t gm_v16 __attribute__((vector_size(16)));
static void gm_unpack4(const uint8_t *restrict p, int64_t K, uint8_t *restrict out)
{
    const gm_v16 lo_i = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
    const gm_v16 hi_i = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        gm_v16 b;
        memcpy(&b, p + k / 2, 16);
        const gm_v16 l = b & 15, h = b >> 4, o0 = __builtin_shuffle(l, h, lo_i), o1 = __builtin_shuffle(l, h, hi_i);
        memcpy(out + k, &o0, 16), memcpy(out + k + 16, &o1, 16);
    }
    for (; k < K; k++) out[k] = (p[k / 2] >> (4 * (k & 1))) & 15;
}

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2")
#define T(name) name##_avx512
#define VBYTES 64
#define GFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define GATHER(lut, idx) _mm512_i32gather_ps((__m512i)(idx), lut, 4)
#define LOAD_U8(p) _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p)))
#define LOAD_S8(p) _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p)))
#define LOAD_U8_TWICE(p) _mm512_cvtepu8_epi32(_mm_set1_epi64x(gm_load64(p)))
#include "gemm.h"  /* which undefines the tier's macros */
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi2")
#define T(name) name##_avx2
#define VBYTES 32
#define GFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define GATHER(lut, idx) _mm256_i32gather_ps(lut, (__m256i)(idx), 4)
#define LOAD_U8(p) _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p)))
#define LOAD_S8(p) _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p)))
#define LOAD_U8_TWICE(p) _mm256_cvtepu8_epi32(_mm_set1_epi32((int)gm_load32(p)))
#include "gemm.h"  /* which undefines the tier's macros */
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")
#define BF16_TARGET
#define BF_UNROLL _Pragma("GCC unroll 8")
#include "gemm_bf16.h"
#include "decode_bf16.h"
#undef BF16_TARGET
#undef BF_UNROLL
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,amx-tile,amx-bf16")
#define AMX_TARGET
#include "gemm_amx.h"
#undef AMX_TARGET
#pragma GCC pop_options
#endif
#define T(name) name##_base  /* x86-64 baseline (SSE2: no FMA, a product and a sum) or aarch64 NEON */
#define VBYTES 16
#if defined(__aarch64__)
#define GFMA(a, b, c) vfmaq_f32(c, a, b)
#define GM_WIDEN4(w) vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(w))))
#define LOAD_U8(p) GM_WIDEN4(gm_load32(p))
#define LOAD_S8(p) vmovl_s16(vget_low_s16(vmovl_s8(vcreate_s8(gm_load32(p)))))
#define LOAD_U8_TWICE(p) GM_WIDEN4(gm_load16(p) * 0x10001u)
#else
#define GFMA(a, b, c) ((a) * (b) + (c))
#define LOAD_U8(p) gm_widen4_sse2(gm_load32(p))
#define LOAD_S8(p) ((T(vi))gm_widen4_sse2(gm_load32(p)) << 24 >> 24)
#define LOAD_U8_TWICE(p) gm_widen4_sse2(gm_load16(p) * 0x10001u)
#endif
#include "gemm.h"

typedef struct {
    void (*prep)(const gemv_t *, float *);
    int (*range)(const gemv_t *, const float *, int64_t, int64_t);
    void (*decode)(const gemv_t *, int64_t, int64_t, void *, int32_t);
    int64_t lanes;
} gemm_tier_t;

#define GEMM_TIER(sfx, lanes) {prep_x_##sfx, gemv_range_##sfx, decode_rows_##sfx, lanes}
static const gemm_tier_t GEMM_TIERS[4] = {  /* indexed like native.c's TIERS: scalar, avx2, avx512, neon */
    GEMM_TIER(base, 4),
#if defined(__x86_64__)
    GEMM_TIER(avx2, 8),
    GEMM_TIER(avx512, 16),
#else
    GEMM_TIER(base, 4), GEMM_TIER(base, 4),
#endif
    GEMM_TIER(base, 4),
};
#undef GEMM_TIER

static inline const gemm_tier_t *gemm_tier(int32_t tier) { return &GEMM_TIERS[tier >= 0 && tier < 4 ? tier : 0]; }

/* The number of float32 lanes of a tier's vectors: blocks along K that are a multiple of it take the
 * vector loop whole (others end in a scalar tail). */
int64_t fp8_gemm_lanes(int32_t tier) { return gemm_tier(tier)->lanes; }

/* Work on the float32 pattern of the kernels' own products: subnormals are neither read as zero nor
 * flushed (a caller may have set DAZ / FTZ, as torch.set_flush_denormal does; the decoders rely on
 * float32 subnormals), restored afterwards. */
#if defined(__x86_64__)
#define FP_ENTER unsigned csr_ = _mm_getcsr(); _mm_setcsr(csr_ & ~0x8040u)
#define FP_LEAVE _mm_setcsr(csr_)
#else
#define FP_ENTER
#define FP_LEAVE
#endif

/* Whether this CPU has AVX-512 BF16 dot products (the avx512 tier's bf16 route). */
int fp8_gemm_bf16dot(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

/* Whether this CPU has AMX-BF16 and the kernel lets this process use the tiles (asked for once:
 * Linux's arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), then XCR0's tile bits 17 and 18). */
int fp8_gemm_amx(void)
{
#if defined(__x86_64__) && defined(__linux__)
    static int state = -1;
    if (state < 0) {
        unsigned a, b, c, d, lo = 0, hi = 0;
        int ok = fp8_gemm_bf16dot() && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 22 & 1) && (d >> 24 & 1);
        if (ok && __get_cpuid(1, &a, &b, &c, &d) && (c >> 27 & 1)) {  /* OSXSAVE: xgetbv */
            ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            ok = ok && (lo >> 17 & 3) == 3;
        } else {
            ok = 0;
        }
        state = ok;
    }
    return state;
#else
    return 0;
#endif
}

/* route: 0 the tier's GEMV, 1 the BF16 route, 2 AMX, 3 the folded BF16 route (gemm_bf16.h: fs_range) */
static int gemv_part(const gemv_t *G, const gemm_tier_t *k, const void *xp, int route, int64_t n0, int64_t n1)
{
    int rc;
    FP_ENTER;
#if defined(__x86_64__)
    if (route == 3) rc = fs_range(G, xp, n0, n1);
    else if (route == 2) rc = amx_range(G, xp, n0, n1);
    else if (route == 1) rc = bf_range(G, xp, n0, n1);
    else
#endif
    rc = k->range(G, xp, n0, n1);
    FP_LEAVE;
    (void)route;
    return rc;
}

/* y = x W^T (+ bias) over `threads` OpenMP threads (split along N); routes: bit 0 lets the avx512 tier
 * take the BF16 route for bf16 activations (where G->bf16_ok), bit 1 the AMX route (where G->amx_ok, at
 * most 16 rows), bit 2 the folded BF16 route (where G->amx_ok, at most 8 rows; on CPUs without AMX, or
 * where bit 1 is off). Returns 0, or -1 without memory. */
int fp8_gemv(const gemv_t *G, int32_t threads, int32_t tier, int32_t routes)
{
    const gemm_tier_t *k = gemm_tier(tier);
    const int avx512bf = tier == 2 && G->x_bf16 && fp8_gemm_bf16dot();
    const int route = avx512bf && (routes & 2) && G->amx_ok && G->M <= 16 && fp8_gemm_amx() ? 2
                      : avx512bf && (routes & 4) && G->amx_ok && G->bf16_ok && G->M <= 8   ? 3
                      : avx512bf && (routes & 1) && G->bf16_ok                            ? 1
                                                                                          : 0;
    /* the activations, converted once: aligned to whole cache lines for the vector loads (AMX: a step of
     * 32 codes takes 64 M bytes; the folded route: rows of K rounded up to 32) */
    const int64_t xbytes = route >= 2 ? (G->K + 31) / 32 * 64 * G->M : G->M * G->K * 4;
    void *xp = aligned_alloc(64, ((xbytes + 63) / 64 + 1) * 64);
    if (!xp) return -1;
#if defined(__x86_64__)
    if (route == 3) fs_prep_x(G, xp);
    else if (route == 2) amx_prep_x(G, xp);
    else if (route == 1) bf_prep_x(G, xp);
    else
#endif
    k->prep(G, xp);
    const int64_t N = G->N, unit = route == 2 ? 32 : route == 3 ? 2 : 4;
    int rc = 0;
    if (threads <= 1) {
        rc = gemv_part(G, k, xp, route, 0, N);
    } else {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) reduction(| : rc)
#endif
        for (int w = 0; w < threads; w++) {
            /* ranges of whole groups of `unit` rows (four accumulator chains; AMX: two tiles of 16; the
             * folded route: pairs) */
            const int64_t n0 = (N / unit * w / threads) * unit;
            const int64_t n1 = w == threads - 1 ? N : (N / unit * (w + 1) / threads) * unit;
            rc |= gemv_part(G, k, xp, route, n0, n1);
        }
    }
    free(xp);
    return rc;
}

/* One call of a layer's prepared plan (nn/fused.py): the plan's weight fields (never written here, so
 * threads may share a plan) with this call's M contiguous rows of activations x and outputs y, both
 * bf16 (flags bit 0) or both float32; flags bit 1 allows the BF16 route, bit 2 the AMX route, bit 3 the
 * folded BF16 route; bias: N float32 or NULL. */
int fp8_gemv_run(const gemv_t *plan, const void *x, void *y, int64_t M, int32_t flags, int32_t tier,
                 int32_t threads, const float *bias)
{
    gemv_t G = *plan;
    G.x = x, G.x_bf16 = G.y_bf16 = flags & 1, G.M = M, G.ldx = G.K;
    G.y = y, G.ldy = G.N, G.bias = bias;
    return fp8_gemv(&G, threads, tier, flags >> 1 & 7);
}

static void decode_part(const gemv_t *G, const gemm_tier_t *k, int dr, int64_t n0, int64_t n1, void *out, int32_t bf16,
                        float smul)
{
    FP_ENTER;
#if defined(__x86_64__)
    if (dr) dr_bf16(G, n0, n1, out, smul);
    else
#endif
    k->decode(G, n0, n1, out, bf16);
    FP_LEAVE;
    (void)dr, (void)smul;
}

/* Rows [n0, n1) of the dequantized weight into out ((n1 - n0) x K, float32 or bf16 bits). smul != 0: each
 * scale s taken as bf16(s * smul) (float32 product, round to nearest even; the prefill's tensor split):
 * by the AVX-512 BF16 row decoder per block, by the others from a transient copy of the rows' block rows. Returns 0, or -1 without memory. */
int fp8_decode_rows(const gemv_t *G, int64_t n0, int64_t n1, void *out, int32_t bf16, int32_t threads, int32_t tier,
                    float smul)
{
    const gemm_tier_t *k = gemm_tier(tier);
    int dr = 0;  /* the AVX-512 BF16 row decoder (decode_bf16.h), which rounds the scales itself */
#if defined(__x86_64__)
    dr = bf16 && tier == 2 && dr_bf16_ok(G) && fp8_gemm_bf16dot();
#endif
    gemv_t S;
    float *grid = NULL;
    if (smul != 0.0f && n1 > n0 && !dr) {
        const int64_t gk = (G->K + G->bn - 1) / G->bn, r0 = n0 / G->bm, r1 = (n1 - 1) / G->bm + 1;
        grid = malloc((size_t)((r1 - r0) * gk) * sizeof(float));
        if (!grid) return -1;
        for (int64_t i = 0; i < (r1 - r0) * gk; i++) {  /* gm_bf16, branch-free so that it vectorizes */
            const uint32_t u = gm_f2u(G->sgrid[r0 * gk + i] * smul);
            const uint32_t r = (u & 0x7FFFFFFFu) > 0x7F800000u ? u | 0x400000u : u + 0x7FFFu + ((u >> 16) & 1u);
            grid[i] = gm_u2f(r & 0xFFFF0000u);
        }
        S = *G;
        S.codes += r0 * G->bm * G->row_bytes, S.N -= r0 * G->bm, S.sgrid = grid;
        n0 -= r0 * G->bm, n1 -= r0 * G->bm, G = &S;
    }
    const int64_t n = n1 - n0, es = bf16 ? 2 : 4;
    if (threads <= 1) {
        decode_part(G, k, dr, n0, n1, out, bf16, smul);
    } else {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
        for (int w = 0; w < threads; w++) {
            const int64_t a = n * w / threads, b = n * (w + 1) / threads;
            decode_part(G, k, dr, n0 + a, n0 + b, (char *)out + a * G->K * es, bf16, smul);
        }
    }
    free(grid);
    return 0;
}
#undef FP_ENTER
#undef FP_LEAVE

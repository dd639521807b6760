/* fp8port's CPU kernels: element encode / decode, block quantize / dequantize, tensor amax.
 *
 * kernels.h holds every kernel once, in plain C; this file compiles it for each ISA tier of the
 * machine's architecture (x86-64: the baseline, AVX2+FMA+F16C, AVX-512 F/BW/VL/DQ; aarch64:
 * NEON, which every aarch64 CPU has) and picks one per call: `tier` is chosen in Python
 * (fp8port/cpu/__init__.py) from fp8_cpu_tiers() and the FP8PORT_ISA cap. Loaded through ctypes.
 *
 * Bit-exact with the NumPy references (codec/reference.py, quant/reference.py):
 *   - an element's code is computed from the float32 bits of the value the reference encodes
 *     (x * 2^-E, x / s or x * fp32(1/s), in float32): rebias and round for the normal range,
 *     a rounded shift of the significand below it, then overflow, Inf, NaN and sign rules, all
 *     read off the format's spec and profile in Python (codec/cpu_params.py);
 *   - a block's amax is an integer max of the bits with the sign cleared (|x| orders so);
 *   - a power-of-two rule is a step function of the amax bits (quant/steps.py builds it from
 *     the reference rule itself), so no rule is written here.
 * Build: -O3 -ffp-contract=off (no FMA may fuse the products the reference rounds twice).
 */
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

static inline int any_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    unsigned char acc = 0;
    for (size_t i = 0; i < n; i++) acc |= b[i];
    return acc != 0;
}

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* float32 bits -> bf16 bits, round to nearest even; NaN stays NaN (quiet bit set) */
static inline uint16_t bf16_rne(uint32_t u)
{
    const uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? (u >> 16) | 0x40u : r);
}

/* One element format under one profile, as encode_one reads it (built by codec/cpu_params.py). */
typedef struct {
    int32_t nrm_fexp;           /* float32 biased exponent of the smallest normal (256: fixed point) */
    int32_t nrm_off;            /* (127 - bias) << 23: float32 bits -> the format's exponent field */
    int32_t S;                  /* 23 - mantissa bits */
    uint32_t half_n;            /* 1 << (S - 1) */
    int32_t sub_base;           /* below the normal range the significand shifts by sub_base - fexp */
    int32_t rne, away;          /* rounding: nearest-even, nearest-away, or (neither) toward zero */
    int32_t maxq_pos, maxq_neg; /* largest finite magnitudes (code without sign) */
    int32_t ovf_pos, ovf_neg;   /* codes of finite overflow */
    int32_t inf_pos, inf_neg, nan_pos, nan_neg;
    int32_t twos;               /* negative codes are two's complement (INT); else the sign bit is or-ed in */
    int32_t zneg;               /* a negative zero keeps its sign bit (formats with -0) */
    int32_t sign_bit;
} enc_t;

/* The lean encoder (kernels.h encode_fast): finite values, RNE, the sign bit or-ed in. */
typedef struct {
    uint32_t rnd_off;           /* half - 1 - nrm_off: rebias and round in one addition */
    uint32_t S;
    float magic;                /* 2^(23 + emin - M) */
    uint32_t magic_bits;
    uint32_t min_normal;        /* float32 bits of the smallest normal */
    uint32_t maxq, ovf;         /* largest finite magnitude code; code of overflow */
    uint32_t sign_shift;        /* bits - 1 */
} fast_t;

/* The power-of-two path (kernels.h POW2_PATH): sign-bit float formats, RNE, finite blocks. */
typedef struct {
    int32_t M, bias, emin;      /* mantissa bits, exponent bias, exponent of the smallest normal */
    uint32_t maxq, ovf;         /* largest finite magnitude code; code of overflow (without sign) */
    uint32_t sign_shift;        /* bits - 1 */
    int32_t nthr;               /* 7: the threshold encoder (FP4), with z and thr16 / thr32; 0: shift */
    int32_t z;                  /* thresholds are kept relative to 2^(E + z) */
    uint32_t thr16[7], thr32[7]; /* bf16 / float32 bits: code > i where |x| - ((E + z) << mb) > thr[i] */
} pow2_t;

/* Block quantization of x (B, M, N) in bm x bn blocks (partial blocks at the ends allowed). */
typedef struct {
    const void *x;
    int32_t bf16;               /* x holds bf16 bits (else float32) */
    int32_t mode;               /* 0: power-of-two rule from steps; 1: s = max(amax, clamp) / maxv; 2: NVFP4 */
    int64_t B, M, N, bm, bn;
    const uint32_t *steps;      /* mode 0: thr[256][3], sb[256][4], zero (quant/steps.py) */
    float clamp, maxv, p;       /* mode 1: amax clamp (0: none) and element max; mode 2: tensor scale */
    int32_t use_clamp, zero_unit, reciprocal;
    int32_t stored_kind;        /* 0: none; 1: E8M0 byte of s; 2: NVFP4's E4M3 block scale */
    enc_t enc;                  /* the element */
    fast_t fast;                /* and its lean encoder, used where lean != 0 */
    int32_t lean;
    pow2_t pow2;                /* and its power-of-two path, where lean != 0 */
    enc_t e4m3;                 /* mode 2: the block scale's encoder */
    uint8_t *codes;
    float *sgrid;               /* (B, ceil(M / bm), ceil(N / bn)) */
    uint8_t *stored;            /* same grid, stored_kind != 0 */
    int32_t stream;             /* codes are large: aligned vectors of them bypass the cache */
    int32_t aff, aff_d, aff_t, aff_flo, aff_fhi; /* mode 0: the steps as E = f + d + (mantissa >= t), f in [flo, fhi] */
    int32_t cells;              /* mode 2, bf16 rows: magnitude codes by cell (nvfp4_cells.h) */
    int32_t cell_base;          /* the cell of cell_tab[0] (float32 bits >> 20, sticky last bit) */
    int16_t cell_tab[64];       /* magnitude code of cells cell_base .. cell_base + 63 */
    int32_t amax_given;         /* mode 2, bf16: sgrid holds the block amaxes (fp8_nvfp4_amax) */
} quant_t;

typedef struct {
    const uint8_t *codes;
    int64_t B, M, N, bm, bn;
    const float *sgrid;
    const float *lut;           /* 256 decoded values */
    int32_t bf16;               /* out holds bf16 bits (else float32) */
    void *out;
    /* power-of-two blocks of a sign-bit float format, decoded by arithmetic (arith != 0): */
    int32_t arith, M_, bias, sign_shift;
    int32_t e_lo, e_hi;         /* scale exponents for which every finite product is a normal bf16 */
    uint32_t special_min;       /* magnitude codes from here on are Inf / NaN (256: none) */
    uint16_t subtab[8];         /* bf16 bits of subnormal code m (m < 8) times 2^0 */
    int32_t stream;             /* the output is large: aligned vectors of it bypass the cache */
} dequant_t;

static inline uint32_t step_scale(const uint32_t *st, uint32_t a)
{
    if (a == 0) return st[1792];
    const uint32_t f = a >> 23, m = a & 0x7FFFFFu, *thr = st + 3 * f;
    return st[768 + 4 * f + (m >= thr[0]) + (m >= thr[1]) + (m >= thr[2])];
}

/* The multiplier (or divisor, *div) of a block with amax bits a under modes 0 and 1; 1 where the
 * block is left to the general kernel (a non-finite amax, or a scale not finite and positive). */
static inline __attribute__((always_inline)) int block_scale(const quant_t *Q, uint32_t a, int64_t idx, float *mul,
                                                             int32_t *div)
{
    if (a >= 0x7F800000u) return 1;
    float s;
    if (Q->mode == 0) {
        s = u2f(step_scale(Q->steps, a));
    } else {
        float af = u2f(a);
        if (Q->use_clamp && af < Q->clamp) af = Q->clamp;
        s = af / Q->maxv;
        if (Q->zero_unit && a == 0) s = 1.0f;
    }
    const uint32_t sb = f2u(s);
    if (!(s > 0.0f) || sb >= 0x7F800000u) return 1;
    Q->sgrid[idx] = s;
    if (Q->stored_kind == 1) Q->stored[idx] = (uint8_t)(sb >> 23);  /* 2^-127 (subnormal) is byte 0 */
    const int pow2 = sb >= 0x00800000u ? (sb & 0x7FFFFFu) == 0 : (sb & (sb - 1)) == 0;
    if (pow2 || Q->reciprocal) {  /* x * fp32(1/s); for 2^E that is x * 2^-E, exactly x / s */
        *mul = 1.0f / s;
        *div = 0;
    } else {
        *mul = s;
        *div = 1;
    }
    return 0;
}

/* Store a vector of any width: non-temporal when asked and aligned to its size (16, 32 or, with NT64,
 * 64 bytes), else a plain store. */
#define STORE_WIDE(dst, v, stream, NT64)                                                                 \
    do {                                                                                                \
        if ((stream) && sizeof(v) >= 16 && sizeof(v) <= 64 && !((uintptr_t)(dst) & (sizeof(v) - 1))) {  \
            if (sizeof(v) == 64) {                                                                      \
                NT64;                                                                                   \
            } else if (sizeof(v) == 32) {                                                               \
                __m256i t32;                                                                            \
                memcpy(&t32, &(v), sizeof(v) < 32 ? sizeof(v) : 32);                                    \
                _mm256_stream_si256((__m256i *)(dst), t32);                                             \
            } else {                                                                                    \
                __m128i t16;                                                                            \
                memcpy(&t16, &(v), 16);                                                                 \
                _mm_stream_si128((__m128i *)(dst), t16);                                                \
            }                                                                                           \
        } else {                                                                                        \
            memcpy(dst, &(v), sizeof(v));                                                               \
        }                                                                                               \
    } while (0)

#define NO_POW2 (-1000)

/* Whether a block of scale 2^E (amax bits a) takes the power-of-two path (kernels.h POW2_PATH). */
static inline int pow2_ok(const pow2_t *P, int32_t E, uint32_t a)
{
    if ((int32_t)(a >> 23) - E > 254 || (P->ovf != P->maxq && P->ovf != P->maxq + 1)) return 0;
    return P->nthr ? E + P->z >= 0 && E + P->z <= 254 : E >= P->bias + P->M - 126;
}

/* E where the block's multiplier is 2^-E and the power-of-two path applies, else NO_POW2 */
static inline int32_t pow2_exponent(const quant_t *Q, float mul, int32_t div, uint32_t a)
{
    const uint32_t b = f2u(mul);
    if (!Q->lean || div || b < 0x00800000u || (b & 0x7FFFFFu)) return NO_POW2;
    const int32_t E = 127 - (int32_t)(b >> 23);
    return pow2_ok(&Q->pow2, E, a) ? E : NO_POW2;
}

#define TIER_SCALAR 0
#define TIER_AVX2 1
#define TIER_AVX512 2
#define TIER_NEON 3

/* the per-tier kernels */
#if defined(__x86_64__)
/* max of 16-bit lanes holding values <= 0x7FFF: fold to 128 bits, then minpos of the complement */
__attribute__((target("avx2"))) static inline uint32_t hmax16_avx2(__m256i v)
{
    const __m128i h = _mm_max_epu16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return (uint16_t)~_mm_cvtsi128_si32(_mm_minpos_epu16(_mm_xor_si128(h, _mm_set1_epi16(-1))));
}
__attribute__((target("avx512f,avx512bw,avx2"))) static inline uint32_t hmax16_avx512(__m512i v)
{
    return hmax16_avx2(_mm256_max_epu16(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)));
}
__attribute__((target("avx2"))) static inline uint32_t hmax32_avx2(__m256i v)
{
    __m128i h = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0x4E));
    return (uint32_t)_mm_cvtsi128_si32(_mm_max_epu32(h, _mm_shuffle_epi32(h, 0xB1)));
}
/* this tier's saturating subtract and unsigned min (16 / 32-bit lanes; the 32-bit "saturating" one
 * needs a, b < 2^31) and its packing of code vectors (2 of 16-bit, 4 of 32-bit lanes) into bytes */
#define VX(v) ((__m256i)(v))
#define ZX(v) ((__m512i)(v))
#define SUBS16_AVX2(a, b) ((__typeof__(a))_mm256_subs_epu16(VX(a), VX(b)))
#define MINU16_AVX2(a, b) ((__typeof__(a))_mm256_min_epu16(VX(a), VX(b)))
#define SUBS32_AVX2(a, b) ((__typeof__(a))_mm256_max_epi32(_mm256_sub_epi32(VX(a), VX(b)), _mm256_setzero_si256()))
#define MINU32_AVX2(a, b) ((__typeof__(a))_mm256_min_epu32(VX(a), VX(b)))
#define MAXU16_AVX2(a, b) ((__typeof__(a))_mm256_max_epu16(VX(a), VX(b)))
#define MAXU32_AVX2(a, b) ((__typeof__(a))_mm256_max_epu32(VX(a), VX(b)))
#define PACK16_AVX2(c) _mm256_permute4x64_epi64(_mm256_packus_epi16(VX((c)[0]), VX((c)[1])), 0xD8)
#define PACK32_AVX2(c)                                                                                      \
    _mm256_permutevar8x32_epi32(_mm256_packus_epi16(_mm256_packus_epi32(VX((c)[0]), VX((c)[1])),               \
                                                    _mm256_packus_epi32(VX((c)[2]), VX((c)[3]))),              \
                                _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
#define SUBS16_AVX512(a, b) ((__typeof__(a))_mm512_subs_epu16(ZX(a), ZX(b)))
#define MINU16_AVX512(a, b) ((__typeof__(a))_mm512_min_epu16(ZX(a), ZX(b)))
#define SUBS32_AVX512(a, b) ((__typeof__(a))_mm512_max_epi32(_mm512_sub_epi32(ZX(a), ZX(b)), _mm512_setzero_si512()))
#define MINU32_AVX512(a, b) ((__typeof__(a))_mm512_min_epu32(ZX(a), ZX(b)))
#define MAXU16_AVX512(a, b) ((__typeof__(a))_mm512_max_epu16(ZX(a), ZX(b)))
#define MAXU32_AVX512(a, b) ((__typeof__(a))_mm512_max_epu32(ZX(a), ZX(b)))
#define PACK16_AVX512(c) \
    _mm512_permutexvar_epi64(_mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0), _mm512_packus_epi16(ZX((c)[0]), ZX((c)[1])))
#define PACK32_AVX512(c)                                                                                    \
    _mm512_permutexvar_epi32(_mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0),            \
                             _mm512_packus_epi16(_mm512_packus_epi32(ZX((c)[0]), ZX((c)[1])),                  \
                                                 _mm512_packus_epi32(ZX((c)[2]), ZX((c)[3]))))
/* bytes at p to the 16-bit lanes of v (32 or 16 bytes; WIDE64: the 64-byte case) by one vpmovzxbw */
#define WIDEN_U8_X86(v, p, WIDE64)                                                                           \
    do {                                                                                                    \
        WIDE64 if (sizeof(v) == 32) {                                                                       \
            const __m256i w32 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const void *)(p)));                   \
            memcpy(&(v), &w32, sizeof(v));                                                                  \
        } else {                                                                                            \
            const __m128i w16 = _mm_cvtepu8_epi16(_mm_loadl_epi64((const void *)(p)));                       \
            memcpy(&(v), &w16, sizeof(v));                                                                  \
        }                                                                                                   \
    } while (0)
#endif
/* t[m] for 16-bit lanes m < 8 of a table held in every 128-bit lane (dequantize's subnormal codes): one
 * byte shuffle of the indices 2m, 2m + 1 (AVX2 has no 16-bit permute; GCC would go lane by lane) */
#define LUT16_PSHUFB(t, m, SHUF, VT) ((__typeof__(t))SHUF((VT)(t), (VT)((m) * 0x0202 + 0x0100)))
/* the same in plain vector C (the baseline and NEON tiers) */
#define MINU_ANY(a, b) ({ __typeof__(a) mu_a = (a), mu_b = (b), mu_lt = (__typeof__(a))(mu_a < mu_b); \
                          (mu_lt & mu_a) | (~mu_lt & mu_b); })
#define MAXU_ANY(a, b) ({ __typeof__(a) mx_a = (a), mx_b = (b), mx_lt = (__typeof__(a))(mx_a < mx_b); \
                          (mx_lt & mx_b) | (~mx_lt & mx_a); })
#define SUBS_ANY(a, b) ({ __typeof__(a) su_a = (a); su_a - MINU_ANY(su_a, (b)); })
#if defined(__x86_64__)
#include "nvfp4_cells.h"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2")
#define T(name) name##_avx512
#define VBYTES 64
#define ANY(v) (_mm512_test_epi64_mask((__m512i)(v), (__m512i)(v)) != 0)
/* max of the lanes into a (0: done; 1: the caller's generic ladder): 16-bit lanes by halving to 128
 * bits and one minpos of the complement, 32-bit lanes by the reduce intrinsic */
#define HMAX(ELT, v, a) (sizeof(ELT) == 2 ? ((a) = hmax16_avx512((__m512i)(v)), 0) \
                                          : ((a) = (uint32_t)_mm512_reduce_max_epi32((__m512i)(v)), 0))
#define SUBS16 SUBS16_AVX512
#define MINU16 MINU16_AVX512
#define SUBS32 SUBS32_AVX512
#define MINU32 MINU32_AVX512
#define MAXU16 MAXU16_AVX512
#define MAXU32 MAXU32_AVX512
#define PACK16(c) ((T(bytes))PACK16_AVX512(c))
#define PACK32(c) ((T(bytes))PACK32_AVX512(c))
#define LUT16(t, m) __builtin_shuffle(t, m)
#define LUT16_HALF(t, m) LUT16_PSHUFB(t, m, _mm256_shuffle_epi8, __m256i)
#define WIDEN_U8(v, p) WIDEN_U8_X86(v, p, if (sizeof(v) == 64) {                                                \
        const __m512i w64 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const void *)(p)));                     \
        memcpy(&(v), &w64, sizeof(v));                                                                      \
    } else)
#define WIDEN_BF16(u, p) ((u) = (__typeof__(u))_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const void *)(p))), 16))
#define STORE_OUT(dst, v, stream)                                                                        \
    STORE_WIDE(dst, v, stream, do {                                                                      \
        __m512i t64;                                                                                    \
        memcpy(&t64, &(v), sizeof(v) < 64 ? sizeof(v) : 64);                                            \
        _mm512_stream_si512((void *)(dst), t64);                                                        \
    } while (0))
#define NVFP4_CELLS(Q, x, o, a, mul, pf) nvfp4_cells_avx512(Q, x, o, a, mul, pf)
#include "kernels.h"
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi2")
#define T(name) name##_avx2
#define VBYTES 32
#define ANY(v) (!_mm256_testz_si256((__m256i)(v), (__m256i)(v)))
#define HMAX(ELT, v, a) ((a) = sizeof(ELT) == 2 ? hmax16_avx2((__m256i)(v)) : hmax32_avx2((__m256i)(v)), 0)
#define SUBS16 SUBS16_AVX2
#define MINU16 MINU16_AVX2
#define SUBS32 SUBS32_AVX2
#define MINU32 MINU32_AVX2
#define MAXU16 MAXU16_AVX2
#define MAXU32 MAXU32_AVX2
#define PACK16(c) ((T(bytes))PACK16_AVX2(c))
#define PACK32(c) ((T(bytes))PACK32_AVX2(c))
#define LUT16(t, m) LUT16_PSHUFB(t, m, _mm256_shuffle_epi8, __m256i)
#define LUT16_HALF(t, m) LUT16_PSHUFB(t, m, _mm_shuffle_epi8, __m128i)
#define WIDEN_U8(v, p) WIDEN_U8_X86(v, p, )
#define WIDEN_BF16(u, p) ((u) = (__typeof__(u))_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const void *)(p))), 16))
#define STORE_OUT(dst, v, stream) STORE_WIDE(dst, v, stream, memcpy(dst, &(v), sizeof(v)))
#define NVFP4_CELLS(Q, x, o, a, mul, pf) nvfp4_cells_avx2(Q, x, o, a, mul, pf)
#include "kernels.h"
#pragma GCC pop_options
#endif
#define T(name) name##_base  /* x86-64 baseline (SSE2) or aarch64 NEON */
#define VBYTES 16
#define SUBS16 SUBS_ANY
#define MINU16 MINU_ANY
#define SUBS32 SUBS_ANY
#define MINU32 MINU_ANY
#define MAXU16 MAXU_ANY
#define MAXU32 MAXU_ANY
#define PACK16(c) __builtin_shufflevector((T(bytes))(c)[0], (T(bytes))(c)[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, \
                                          22, 24, 26, 28, 30)
#define PACK32(c) __builtin_shufflevector(                                                                   \
    __builtin_shufflevector((T(bytes))(c)[0], (T(bytes))(c)[1], 0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0), \
    __builtin_shufflevector((T(bytes))(c)[2], (T(bytes))(c)[3], 0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0), \
    0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
#define LUT16(t, m) __builtin_shuffle(t, m)
#define LUT16_HALF LUT16
/* bf16 bits at p to float32 bits in a vector u of 32-bit lanes */
#define WIDEN_U8(v, p) do { typedef uint8_t w8_t __attribute__((vector_size(sizeof(v) / 2))); w8_t w8; \
                              memcpy(&w8, (p), sizeof w8); (v) = __builtin_convertvector(w8, __typeof__(v)); } while (0)
#define WIDEN_BF16(u, p) do { T(lv16) h; memcpy(&h, (p), sizeof h); (u) = __builtin_convertvector(h, T(lv32)) << 16; } while (0)
#define STORE_OUT(dst, v, stream) memcpy(dst, &(v), sizeof(v))
#define NVFP4_CELLS(Q, x, o, a, mul, pf) 0
#if defined(__aarch64__)
#define HMAX(ELT, v, a) ((a) = sizeof(ELT) == 2 ? (uint32_t)vmaxvq_s16((int16x8_t)(v)) : (uint32_t)vmaxvq_s32((int32x4_t)(v)), 0)
#else
#define HMAX(ELT, v, a) 1
#endif
#if defined(__x86_64__)
#define ANY(v) (_mm_movemask_epi8((__m128i)(v)) != 0)
#elif defined(__aarch64__)
#define ANY(v) (vmaxvq_u32((uint32x4_t)(v)) != 0)
#else
#define ANY(v) any_bytes(&(v), sizeof(v))
#endif
#include "kernels.h"


typedef struct {
    void (*encode)(const void *, int32_t, const enc_t, const uint8_t *, uint8_t *, int64_t, int64_t);
    void (*decode)(const uint8_t *, const float *, float *, int64_t, int64_t);
    uint32_t (*amax)(const void *, int32_t, int64_t, int64_t, int64_t);
    int64_t (*quant)(const quant_t *, int64_t, int64_t);
    void (*dequant)(const dequant_t *, int64_t, int64_t);
    uint32_t (*nvamax)(const quant_t *, int64_t, int64_t);
} tier_t;

#define TIER(sfx) {encode_range_##sfx, decode_range_##sfx, amax_rows_##sfx, quant_range_##sfx, dequant_range_##sfx, \
                   nvfp4_amax_rows_##sfx}
#if defined(__x86_64__)
#include "avx512_e4m3.h"

/* Whether the hand-written AVX-512 E4M3 quantizer takes this call (else the generic kernels do). */
static int e4m3_applies(const quant_t *Q)
{
    const pow2_t P = Q->pow2;
    return Q->mode == 0 && Q->lean && P.M == 3 && P.bias == 7 && P.maxq == 0x7E && (P.ovf == 0x7E || P.ovf == 0x7F)
           && P.sign_shift == 7 && Q->bn % 32 == 0 && Q->N % Q->bn == 0 && Q->N / Q->bn <= 4096;
}

/* The avx512 tier's quantize: the E4M3 specialization where it applies, the generic kernel for the
 * rest and for the row groups it hands back. */
static int64_t quant_range_avx512_tier(const quant_t *Q, int64_t t0, int64_t t1)
{
    /* Power-of-two blocks narrower than 64 elements (MX's 32): the generic kernel's full step is 64
     * elements, and the AVX2 build runs them faster than either AVX-512 one (measured on Zen 4,
     * whose 512-bit operations take two 256-bit passes) */
    if (Q->mode == 0 && Q->bn < 64) return quant_range_avx2(Q, t0, t1);
    if (!e4m3_applies(Q) || t1 <= t0) return quant_range_avx512(Q, t0, t1);
    quant_t q = *Q;  /* its non-temporal stores need whole aligned lines */
    q.stream = Q->stream && !((uintptr_t)Q->codes & 63) && Q->N % 64 == 0 && Q->bn % 64 == 0;
    uint8_t *handed = malloc(t1 - t0);
    e4m3_quant_avx512(&q, t0, t1, handed);
    if (q.stream) _mm_sfence();
    int64_t bad = 0;
    for (int64_t t = t0; t < t1; t++)
        if (handed[t - t0]) bad += quant_range_avx512(Q, t, t + 1);
    free(handed);
    return bad;
}
#endif

static const tier_t TIERS[4] = {
    TIER(base),
#if defined(__x86_64__)
    TIER(avx2),
    {encode_range_avx512, decode_range_avx512, amax_rows_avx512, quant_range_avx512_tier, dequant_range_avx512,
     nvfp4_amax_rows_avx512},
#else
    TIER(base), TIER(base),
#endif
    TIER(base),
};

/* Bit i set: tier i runs here. The baseline tier is "scalar" on x86-64 and "neon" on aarch64. */
int fp8_cpu_tiers(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    int m = 1 << TIER_SCALAR;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
        m |= 1 << TIER_AVX2;
    if ((m & (1 << TIER_AVX2)) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        m |= 1 << TIER_AVX512;
    return m;
#elif defined(__aarch64__)
    return 1 << TIER_NEON;
#else
    return 1 << TIER_SCALAR;
#endif
}

static inline const tier_t *tier_of(int32_t tier) { return &TIERS[tier >= 0 && tier < 4 ? tier : 0]; }

/* Split [0, n) into `threads` contiguous ranges on OpenMP threads; threads <= 1 runs without
 * OpenMP at all (safe in a child forked after its parent used OpenMP). */
#ifdef _OPENMP
#define SPLIT(n, threads, body)                                                     \
    if ((threads) <= 1) {                                                           \
        const int64_t i0 = 0, i1 = (n);                                             \
        body;                                                                       \
    } else {                                                                        \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")           \
        for (int w = 0; w < (threads); w++) {                                       \
            const int64_t i0 = (n) * w / (threads), i1 = (n) * (w + 1) / (threads); \
            body;                                                                   \
        }                                                                           \
    }
#else
#define SPLIT(n, threads, body) { const int64_t i0 = 0, i1 = (n); body; }
#endif

void fp8_encode(const void *x, int32_t bf16, int64_t n, const enc_t *e, const uint8_t *lut, uint8_t *out,
                int32_t threads, int32_t tier)
{
    const tier_t *k = tier_of(tier);
    const enc_t ev = *e;
    SPLIT(n, threads, k->encode(x, bf16, ev, lut, out, i0, i1))
}

void fp8_decode(const uint8_t *codes, int64_t n, const float *lut, float *out, int32_t threads, int32_t tier)
{
    const tier_t *k = tier_of(tier);
    SPLIT(n, threads, k->decode(codes, lut, out, i0, i1))
}

/* max |x| bits over n elements (bf16 bits are returned shifted to float32 position) */
uint32_t fp8_amax(const void *x, int32_t bf16, int64_t n, int32_t threads, int32_t tier)
{
    const tier_t *k = tier_of(tier);
    const int64_t es = bf16 ? 2 : 4;
    uint32_t m = 0;
    if (threads <= 1) return k->amax(x, bf16, 1, 0, n);
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) reduction(max : m)
#endif
    for (int w = 0; w < threads; w++) {
        const int64_t i0 = n * w / threads, i1 = n * (w + 1) / threads;
        const uint32_t v = k->amax((const char *)x + i0 * es, bf16, 1, 0, i1 - i0);
        m = v > m ? v : m;
    }
    return m;
}

/* NVFP4's first pass (bf16, 1 x 16 blocks, N a multiple of 128): every block's amax into the scale grid
 * (as bf16 bits in the first half of the row's slot, which the row pass reads before it writes the
 * scales) and their max, the tensor amax; rows split over threads as fp8_quant splits them, so each
 * thread's last rows are still cached. */
uint32_t fp8_nvfp4_amax(const quant_t *Q, int32_t threads, int32_t tier)
{
    const tier_t *k = tier_of(tier);
    const int64_t rows = Q->B * Q->M;
    uint32_t m = 0;
    if (threads <= 1) return k->nvamax(Q, 0, rows);
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) reduction(max : m)
#endif
    for (int w = 0; w < threads; w++) {
        const uint32_t v = k->nvamax(Q, rows * w / threads, rows * (w + 1) / threads);
        m = v > m ? v : m;
    }
    return m;
}

int64_t fp8_quant(const quant_t *Q, int32_t threads, int32_t tier)
{
    const tier_t *k = tier_of(tier);
    const int64_t groups = Q->B * ((Q->M + Q->bm - 1) / Q->bm);
    int64_t bad = 0;
    if (threads <= 1) {
        bad = k->quant(Q, 0, groups);
    } else {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bad)
#endif
        for (int w = 0; w < threads; w++) bad += k->quant(Q, groups * w / threads, groups * (w + 1) / threads);
    }
#if defined(__x86_64__)
    if (Q->stream) _mm_sfence();  /* non-temporal stores are ordered before the caller reads the codes */
#endif
    return bad;
}

void fp8_dequant(const dequant_t *D, int32_t threads, int32_t tier)
{
    const tier_t *k = tier_of(tier);
    const int64_t groups = D->B * ((D->M + D->bm - 1) / D->bm);
    SPLIT(groups, threads, k->dequant(D, i0, i1))
#if defined(__x86_64__)
    if (D->stream) _mm_sfence();  /* non-temporal stores are ordered before the caller reads the output */
#endif
}

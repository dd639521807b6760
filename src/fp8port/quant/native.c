/* AVX-512 kernels for power-of-two block quantization of bf16 or float32 tensors to E4M3, and
 * the matching dequantization; loaded by native.py through ctypes. The entry points at the end
 * split the row groups over OpenMP threads.
 *
 * Bit-exact with reference.py, by the same argument as fast.py's Numba kernels:
 *   - |x| of a float pattern orders like |x| as an integer, so block amax is an integer max,
 *     and the block scale is a lookup in the rule's step form (fast.scale_steps builds it by
 *     bisection on the rule's own code, so every rule, clamp and zero-block choice is exact);
 *   - a power-of-two scale 2^E makes x * 2^-E exact: subtract E from the exponent field
 *     (valid while the result stays normal; blocks where it may not are reported as "bad"
 *     and redone by the general kernel);
 *   - E4M3 round-to-nearest-even on the shifted pattern: normal codes by adding half an ulp
 *     minus one plus the lsb and shifting, subnormal codes by a variable shift with the tie.
 * Every CPU-specific function is compiled for AVX-512 and chosen at run time: on other CPUs
 * fp8_simd_level() returns 0 and Python keeps the Numba kernels.
 */
#include <stdint.h>
#include <string.h>
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* 0: neither kernel runs here; 1: quantize (AVX-512 F/BW/VL/DQ); 2: also dequantize (+VBMI) */
int fp8_simd_level(void)
{
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
          && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")))
        return 0;
    return __builtin_cpu_supports("avx512vbmi") ? 2 : 1;
}

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
        for (int i = 0; i < 64; i += 16) _mm_prefetch((const char *)(pf + o + i), _MM_HINT_T0);
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

/* A power-of-two scale rule as a step function of the block amax (float32 bits, sign clear),
 * built by fast.scale_steps from the rule's own code: within exponent field f the scale is
 * sb[f][number of thr[f] <= mantissa]. */
typedef struct {
    uint32_t thr[256][3];
    uint32_t sb[256][4];
    uint32_t zero;  /* the scale of an all-zero block */
} steps_t;

static inline uint32_t rule_scale(const steps_t *r, uint32_t a)
{
    if (a == 0) return r->zero;
    const uint32_t f = a >> 23, m = a & 0x7FFFFF;
    return r->sb[f][(m >= r->thr[f][0]) + (m >= r->thr[f][1]) + (m >= r->thr[f][2])];
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

/* The bf16 encoder and the quantize driver, compiled twice: E4M3 subnormals by integer shifts
 * (AVX-512 F/BW/VL/DQ), or by one fp16 -> int16 conversion where the CPU has AVX512-FP16. */
#define AVX512FP16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512fp16")))
#define QTARGET AVX512
#define Q(name) name
#define SUBNORMAL_FP16 0
#include "native_quant.h"
#undef QTARGET
#undef Q
#undef SUBNORMAL_FP16
#define QTARGET AVX512FP16
#define Q(name) name##_fp16
#define SUBNORMAL_FP16 1
#include "native_quant.h"

static inline uint16_t bf16_rne(uint32_t u)
{
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

#define AVX512VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi")))

/* Dequantize row groups [t0, t1) of codes (B, M, N), bn % 64 == 0, N % bn == 0, with power-of-two
 * scales sgrid. tab: bf16 bits of the decoded value of each of the 256 codes, split into
 * low bytes (tab[0..255]) and high bytes (tab[256..511]); lut32: the float32 decode table.
 * Blocks whose exponent lies in [e_lo, e_hi] (every finite non-zero product stays a normal
 * bf16, so adding E << 7 is exact) take the vector path: two byte lookups of 128 entries
 * each per byte half (vpermi2b), one for each sign. Other blocks multiply in float32 and
 * round, as the reference does. stream: out is 64-byte aligned, full lines bypass the cache. */
AVX512VBMI void fp8_dequant_pow2(const uint8_t *codes, int64_t B, int64_t M, int64_t N, int64_t bm, int64_t bn,
                                 const float *sgrid, const uint8_t *tab, const float *lut32, int32_t e_lo,
                                 int32_t e_hi, int32_t to_bf16, int32_t stream, void *out, int64_t t0, int64_t t1)
{
    const int64_t gm = (M + bm - 1) / bm, gn = N / bn;
    __m512i lo[4], hi[4];
    for (int i = 0; i < 4; i++) {
        lo[i] = _mm512_loadu_si512(tab + 64 * i);
        hi[i] = _mm512_loadu_si512(tab + 256 + 64 * i);
    }
    /* byte i of lane k goes to 8k + i (i < 8) or 32 + 8k + i - 8, so that unpacklo / unpackhi
     * of the looked-up bytes give elements 0..31 and 32..63 in order */
    uint8_t ord[64];
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < 8; i++) { ord[16 * k + i] = 8 * k + i; ord[16 * k + 8 + i] = 32 + 8 * k + i; }
    const __m512i order = _mm512_loadu_si512(ord), two = _mm512_set1_epi16(2), lim = _mm512_set1_epi16((short)0xFEFE);
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / gm, g = t - b * gm, r0 = g * bm, r1 = r0 + bm < M ? r0 + bm : M;
        const float *sg = sgrid + t * gn;
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *c = codes + (b * M + r) * N;
            uint16_t *o16 = (uint16_t *)out + (b * M + r) * N;
            uint32_t *o32 = (uint32_t *)out + (b * M + r) * N;
            for (int64_t j = 0; j < gn; j++) {
                const float s = sg[j];
                const uint32_t sb = f2u(s);
                const int e = (int)(sb >> 23) - 127;
                if ((sb & 0x7FFFFF) || sb == 0 || e < e_lo || e > e_hi) {  /* exact scalar path */
                    for (int64_t k = j * bn; k < (j + 1) * bn; k++) {
                        uint32_t u = f2u(lut32[c[k]] * s);
                        if (to_bf16) o16[k] = bf16_rne(u); else o32[k] = u;
                    }
                    continue;
                }
                const __m512i add = _mm512_set1_epi16((short)(e * 128));
                for (int64_t o = j * bn; o < (j + 1) * bn; o += 64) {
                    __m512i ci = _mm512_permutexvar_epi8(order, _mm512_loadu_si512(c + o));
                    __mmask64 neg = _mm512_movepi8_mask(ci);
                    __m512i l = _mm512_mask_blend_epi8(neg, _mm512_permutex2var_epi8(lo[0], ci, lo[1]),
                                                       _mm512_permutex2var_epi8(lo[2], ci, lo[3]));
                    __m512i h = _mm512_mask_blend_epi8(neg, _mm512_permutex2var_epi8(hi[0], ci, hi[1]),
                                                       _mm512_permutex2var_epi8(hi[2], ci, hi[3]));
                    __m512i v[2] = {_mm512_unpacklo_epi8(l, h), _mm512_unpackhi_epi8(l, h)};
                    for (int i = 0; i < 2; i++) {
                        /* finite non-zero values (magnitude 1 .. 0x7F7F) take the exponent shift */
                        __mmask32 fin = _mm512_cmplt_epu16_mask(_mm512_sub_epi16(_mm512_add_epi16(v[i], v[i]), two), lim);
                        __m512i w = _mm512_mask_add_epi16(v[i], fin, v[i], add);
                        if (to_bf16) {
                            if (stream) _mm512_stream_si512((void *)(o16 + o + 32 * i), w);
                            else _mm512_storeu_si512(o16 + o + 32 * i, w);
                        } else {
                            __m512i w0 = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(w)), 16);
                            __m512i w1 = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(w, 1)), 16);
                            if (stream) {
                                _mm512_stream_si512((void *)(o32 + o + 32 * i), w0);
                                _mm512_stream_si512((void *)(o32 + o + 32 * i + 16), w1);
                            } else {
                                _mm512_storeu_si512(o32 + o + 32 * i, w0);
                                _mm512_storeu_si512(o32 + o + 32 * i + 16, w1);
                            }
                        }
                    }
                }
            }
        }
    }
    if (stream) _mm_sfence();
}

/* Entry points: split the row groups into `threads` contiguous ranges on OpenMP threads. The
 * process has one OpenMP runtime (torch and Numba load the same libgomp), so these threads are
 * the ones torch just used, not a second pool competing with them for the cores. */
int64_t fp8_quant(const void *x, int32_t f32, int64_t B, int64_t M, int64_t N, int64_t bm, int64_t bn,
                  const steps_t *rule, int32_t cap_code, int32_t stream, uint8_t *codes, float *sgrid,
                  int32_t fp16, int32_t threads)
{
    const int64_t groups = B * ((M + bm - 1) / bm);
    int64_t bad = 0;
    if (threads <= 1)  /* no OpenMP at all: also safe in a forked child */
        return fp16 ? fp8_quant_pow2_fp16(x, f32, B, M, N, bm, bn, rule, cap_code, stream, codes, sgrid, 0, groups)
                    : fp8_quant_pow2(x, f32, B, M, N, bm, bn, rule, cap_code, stream, codes, sgrid, 0, groups);
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bad)
    for (int i = 0; i < threads; i++) {
        const int64_t t0 = groups * i / threads, t1 = groups * (i + 1) / threads;
        bad += fp16 ? fp8_quant_pow2_fp16(x, f32, B, M, N, bm, bn, rule, cap_code, stream, codes, sgrid, t0, t1)
                    : fp8_quant_pow2(x, f32, B, M, N, bm, bn, rule, cap_code, stream, codes, sgrid, t0, t1);
    }
    return bad;
}

/* 1 where the CPU converts fp16 to integers in AVX-512 (AVX512-FP16: faster E4M3 subnormals) */
int fp8_simd_fp16(void)
{
    __builtin_cpu_init();
    return fp8_simd_level() > 0 && __builtin_cpu_supports("avx512fp16");
}

void fp8_dequant(const uint8_t *codes, int64_t B, int64_t M, int64_t N, int64_t bm, int64_t bn,
                 const float *sgrid, const uint8_t *tab, const float *lut32, int32_t e_lo, int32_t e_hi,
                 int32_t to_bf16, int32_t stream, void *out, int32_t threads)
{
    const int64_t groups = B * ((M + bm - 1) / bm);
    if (threads <= 1) {
        fp8_dequant_pow2(codes, B, M, N, bm, bn, sgrid, tab, lut32, e_lo, e_hi, to_bf16, stream, out, 0, groups);
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int i = 0; i < threads; i++)
        fp8_dequant_pow2(codes, B, M, N, bm, bn, sgrid, tab, lut32, e_lo, e_hi, to_bf16, stream, out,
                         groups * i / threads, groups * (i + 1) / threads);
}

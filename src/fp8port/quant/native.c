/* AVX-512 kernels for power-of-two block quantization of bf16 tensors to E4M3, and the
 * matching dequantization; loaded by native.py through ctypes. The entry points at the end
 * split the row groups over OpenMP threads.
 *
 * Bit-exact with reference.py, by the same argument as fast.py's Numba kernels:
 *   - |x| of a bf16 pattern orders like |x| as an integer, so block amax is an integer max,
 *     and the block scale is a table lookup on that 15-bit pattern (native.py builds the table
 *     from the scale rule, so every rule, clamp and zero-block choice is exact by construction);
 *   - a power-of-two scale 2^E makes x * 2^-E exact: subtract E << 7 from the pattern
 *     (valid while the result stays normal; blocks where it may not are reported as "bad"
 *     and redone by the general kernel);
 *   - E4M3 round-to-nearest-even on the shifted pattern: normal codes by adding 7 plus the lsb
 *     and shifting, subnormal codes by a variable right shift with an explicit tie.
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

/* E4M3 codes (in 16-bit lanes, sign included) of 32 bf16 patterns p divided by 2^E. One
 * saturating subtraction of k both divides by 2^E and rebiases to E4M3's exponent: the result
 * is code << 4 plus 4 rounding bits for normal E4M3 values, and 0 below them. A bf16 subnormal
 * input (no implicit 1) in a block with E >= -102 lands below ks (code 0), as its value does. */
AVX512 static inline __m512i encode32(__m512i p, shift_t s, __m512i cap)
{
    const __m512i one = _mm512_set1_epi16(1), k80 = _mm512_set1_epi16(0x80);
    __m512i m = _mm512_and_si512(p, _mm512_set1_epi16(0x7FFF));
    __m512i v = _mm512_subs_epu16(m, s.k);
    /* normal E4M3: round to nearest even by adding 7 + lsb and dropping 4 bits */
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi16(v, 4), one);
    __m512i nrm = _mm512_srli_epi16(_mm512_add_epi16(_mm512_add_epi16(v, lsb), _mm512_set1_epi16(7)), 4);
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
AVX512 static inline void encode_span(const uint16_t *q, uint8_t *c, int64_t n, shift_t sh, __m512i cap,
                                      int stream, const uint16_t *pf)
{
    const __m512i order = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);
    int64_t o = 0;
    for (; o + 64 <= n; o += 64) {  /* two vectors packed into one 64-byte line */
        _mm_prefetch((const char *)(pf + o), _MM_HINT_T0);
        _mm_prefetch((const char *)(pf + o + 32), _MM_HINT_T0);
        __m512i c0 = encode32(_mm512_loadu_si512(q + o), sh, cap);
        __m512i c1 = encode32(_mm512_loadu_si512(q + o + 32), sh, cap);
        __m512i pk = _mm512_permutexvar_epi64(order, _mm512_packus_epi16(c0, c1));
        if (stream) _mm512_stream_si512((void *)(c + o), pk);
        else _mm512_storeu_si512(c + o, pk);
    }
    if (o < n)
        _mm256_storeu_si256((__m256i *)(c + o), _mm512_cvtepi16_epi8(encode32(_mm512_loadu_si512(q + o), sh, cap)));
}

/* max |x| pattern over rows [0, nr) of a block of bn (a multiple of 32) at q, row stride N */
AVX512 static inline uint16_t block_amax(const uint16_t *q, int64_t nr, int64_t N, int64_t bn)
{
    const __m512i k7fff = _mm512_set1_epi16(0x7FFF);
    __m512i acc = _mm512_setzero_si512();
    for (int64_t r = 0; r < nr; r++)
        for (int64_t k = 0; k < bn; k += 32)
            acc = _mm512_max_epu16(acc, _mm512_and_si512(_mm512_loadu_si512(q + r * N + k), k7fff));
    return hmax_epu16(acc);
}

/* Quantize row groups [t0, t1) of x (B, M, N) bf16 bits with bm x bn blocks (bn % 32 == 0,
 * N % bn == 0, gn = N / bn <= 4096) into codes (B, M, N) and sgrid (B, ceil(M/bm), gn).
 * scale[A] / shift[A]: float32 bits of the block scale and E << 7 for every block amax pattern A
 * (built by native.py from the rule); shift[A] == INT16_MIN marks a block this kernel cannot do
 * (non-finite amax, NaN scale, E < -102). Returns the number of such groups; their outputs are
 * partly written and the caller redoes the tensor with the general kernel. stream: codes are
 * 64-byte aligned and N, bn multiples of 64, so full lines go around the cache.
 * Rows of 1 x bn blocks: the amax of the whole row, then its codes (the row stays in L1).
 * bm x bn tiles: one tile at a time, amax then codes (a 128 x 128 bf16 tile is 32 KiB). */
AVX512 int64_t fp8_quant_bf16_pow2(const uint16_t *x, int64_t B, int64_t M, int64_t N, int64_t bm, int64_t bn,
                                   const uint32_t *scale, const int16_t *shift, int32_t cap_code, int32_t stream,
                                   uint8_t *codes, float *sgrid, int64_t t0, int64_t t1)
{
    const int64_t gm = (M + bm - 1) / bm, gn = N / bn;
    uint16_t amax[4096];
    int64_t bad = 0;
    const __m512i cap = _mm512_set1_epi16((short)cap_code);
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / gm, g = t - b * gm, r0 = g * bm, nr = (r0 + bm < M ? r0 + bm : M) - r0;
        const uint16_t *xg = x + (b * M + r0) * N;
        uint8_t *cg = codes + (b * M + r0) * N;
        float *sg = sgrid + t * gn;
        int isbad = 0;
        if (bm == 1) {
            for (int64_t j = 0; j < gn; j++) {
                amax[j] = block_amax(xg + j * bn, 1, N, bn);
                isbad |= shift[amax[j]] == INT16_MIN;
            }
            for (int64_t j = 0; j < gn && !isbad; j++) {
                sg[j] = u2f(scale[amax[j]]);
                encode_span(xg + j * bn, cg + j * bn, bn, block_shift(shift[amax[j]]), cap, stream, xg + N + j * bn);
            }
        } else {
            for (int64_t j = 0; j < gn && !isbad; j++) {
                const uint16_t a = block_amax(xg + j * bn, nr, N, bn);
                const int16_t e7 = shift[a];
                isbad = e7 == INT16_MIN;
                sg[j] = u2f(scale[a]);
                const shift_t sh = block_shift(e7);
                /* the next tile: to the right, or the first of the next row group */
                const uint16_t *next = j + 1 < gn ? xg + (j + 1) * bn : xg + nr * N;
                for (int64_t r = 0; r < nr && !isbad; r++)
                    encode_span(xg + r * N + j * bn, cg + r * N + j * bn, bn, sh, cap, stream, next + r * N);
            }
        }
        bad += isbad;
    }
    if (stream) _mm_sfence();
    return bad;
}

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
int64_t fp8_quant(const uint16_t *x, int64_t B, int64_t M, int64_t N, int64_t bm, int64_t bn,
                  const uint32_t *scale, const int16_t *shift, int32_t cap_code, int32_t stream,
                  uint8_t *codes, float *sgrid, int32_t threads)
{
    const int64_t groups = B * ((M + bm - 1) / bm);
    int64_t bad = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bad)
    for (int i = 0; i < threads; i++)
        bad += fp8_quant_bf16_pow2(x, B, M, N, bm, bn, scale, shift, cap_code, stream, codes, sgrid,
                                   groups * i / threads, groups * (i + 1) / threads);
    return bad;
}

void fp8_dequant(const uint8_t *codes, int64_t B, int64_t M, int64_t N, int64_t bm, int64_t bn,
                 const float *sgrid, const uint8_t *tab, const float *lut32, int32_t e_lo, int32_t e_hi,
                 int32_t to_bf16, int32_t stream, void *out, int32_t threads)
{
    const int64_t groups = B * ((M + bm - 1) / bm);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int i = 0; i < threads; i++)
        fp8_dequant_pow2(codes, B, M, N, bm, bn, sgrid, tab, lut32, e_lo, e_hi, to_bf16, stream, out,
                         groups * i / threads, groups * (i + 1) / threads);
}

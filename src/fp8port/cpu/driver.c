/* A standalone driver of the kernels for machines where Python cannot load them: the tests
 * cross-compile it for aarch64 and run it under qemu-user (tests/cpu/test_aarch64.py).
 *
 * stdin: a sequence of calls, each a u32 op followed by its record; stdout: each call's outputs.
 * The parameter structs travel as the bytes Python's ctypes built (x86-64 and aarch64 lay them out
 * alike: both LP64); their pointer fields are replaced by this process's buffers.
 *   op 1 encode:   u32 bf16, u64 n, enc_t, u32 has_lut, [lut: 65536 bytes], n inputs -> n codes
 *   op 2 quant:    quant_t, steps (1793 u32), B*M*N inputs -> codes, sgrid (f32), stored (u8), i64 bad
 *   op 3 dequant:  dequant_t, B*M*N codes, grid (f32), lut (256 f32) -> B*M*N outputs
 *   op 4 gemv:     gemv_t, N*row_bytes codes, grid (f32), lut (256 f32), u32 has_bias, [N f32],
 *                  M*K activations -> M*N outputs (gemm.c)
 *   op 5 decode:   gemv_t, N*row_bytes codes, grid (f32), lut (256 f32), u32 bf16 -> N*K values
 * Built without OpenMP: every call runs on one thread (the tier is the machine's best).
 */
#include "native.c"
#include "gemm.c"

#include <stdio.h>

static void *take(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p || (n && fread(p, 1, n, stdin) != n)) {
        fprintf(stderr, "driver: short input\n");
        exit(2);
    }
    return p;
}

static void give(const void *p, size_t n) { fwrite(p, 1, n, stdout); }

static int32_t best_tier(void)
{
    const int m = fp8_cpu_tiers();
    int32_t t = 0;
    for (int i = 0; i < 4; i++)
        if (m >> i & 1) t = i;
    return t;
}

int main(void)
{
    const int32_t tier = best_tier();
    uint32_t op;
    while (fread(&op, 4, 1, stdin) == 1) {
        if (op == 1) {
            uint32_t *bf16 = take(4), *has_lut;
            uint64_t *n = take(8);
            enc_t *e = take(sizeof(enc_t));
            has_lut = take(4);
            uint8_t *lut = *has_lut ? take(65536) : NULL;
            void *x = take(*n * (*bf16 ? 2 : 4));
            uint8_t *out = malloc(*n ? *n : 1);
            fp8_encode(x, (int32_t)*bf16, (int64_t)*n, e, lut, out, 1, tier);
            give(out, *n);
            free(bf16), free(n), free(e), free(has_lut), free(lut), free(x), free(out);
        } else if (op == 2) {
            quant_t *q = take(sizeof(quant_t));
            const int64_t total = q->B * q->M * q->N, grid = q->B * ((q->M + q->bm - 1) / q->bm) * ((q->N + q->bn - 1) / q->bn);
            uint32_t *st = take(1793 * 4);
            q->x = take(total * (q->bf16 ? 2 : 4));
            q->steps = st;
            q->codes = calloc(total ? total : 1, 1);
            q->sgrid = calloc(grid ? grid : 1, 4);
            q->stored = calloc(grid ? grid : 1, 1);
            const int64_t bad = fp8_quant(q, 1, tier);
            give(q->codes, total), give(q->sgrid, grid * 4), give(q->stored, grid), give(&bad, 8);
            free((void *)q->x), free(st), free(q->codes), free(q->sgrid), free(q->stored), free(q);
        } else if (op == 3) {
            dequant_t *d = take(sizeof(dequant_t));
            const int64_t total = d->B * d->M * d->N, grid = d->B * ((d->M + d->bm - 1) / d->bm) * ((d->N + d->bn - 1) / d->bn);
            d->codes = take(total);
            d->sgrid = take(grid * 4);
            d->lut = take(256 * 4);
            d->out = malloc(total * (d->bf16 ? 2 : 4) + 1);
            fp8_dequant(d, 1, tier);
            give(d->out, total * (d->bf16 ? 2 : 4));
            free((void *)d->codes), free((void *)d->sgrid), free((void *)d->lut), free(d->out), free(d);
        } else if (op == 4 || op == 5) {
            gemv_t *g = take(sizeof(gemv_t));
            const int64_t grid = ((g->N + g->bm - 1) / g->bm) * ((g->K + g->bn - 1) / g->bn);
            g->codes = take(g->N * g->row_bytes);
            g->sgrid = take(grid * 4);
            g->lut = take(256 * 4);
            uint32_t *flag = take(4);
            void *bias = NULL, *x = NULL, *y;
            size_t ny;
            if (op == 4) {
                g->bias = bias = *flag ? take(g->N * 4) : NULL;
                g->x = x = take(g->M * g->K * (g->x_bf16 ? 2 : 4));
                g->ldx = g->K, g->ldy = g->N;
                ny = g->M * g->N * (g->y_bf16 ? 2 : 4);
                g->y = y = malloc(ny + 1);
                if (fp8_gemv(g, 1, tier, 1)) return 3;
            } else {
                ny = g->N * g->K * (*flag ? 2 : 4);
                y = malloc(ny + 1);
                fp8_decode_rows(g, 0, g->N, y, (int32_t)*flag, 1, tier, 0.0f);
            }
            give(y, ny);
            free((void *)g->codes), free((void *)g->sgrid), free((void *)g->lut), free(flag), free(bias), free(x);
            free(y), free(g);
        } else {
            fprintf(stderr, "driver: unknown op %u\n", op);
            return 2;
        }
    }
    return 0;
}

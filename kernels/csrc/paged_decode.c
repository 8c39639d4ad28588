/* Paged decode attention on the CPU: one query token per sequence, K/V read in place from the
 * paged cache (no gathered copy), GQA without expanding heads. Semantics: reference.paged_attention
 * for rows with q_len == 1. Built by cpu_decode.py with -O3 -march=native -fopenmp.
 *
 * One task per sequence, walking its tokens in order and reading each token's K (then V) row for
 * all KV heads at once: one contiguous run per token, so the prefetchers stream whole blocks. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* q, out: [B, H, D]; caches: [num_blocks, block_size, KVH, D]; block_tables: [B, max_blocks]. */
void paged_decode_f32(const float *q, const float *k_cache, const float *v_cache, const int32_t *block_tables,
                      const int32_t *seq_lens, float *out, int B, int H, int KVH, int D, int block_size,
                      int max_blocks, int max_len, float scale, int threads) {
    const int G = H / KVH;
    const int64_t row = (int64_t)KVH * D; /* floats per token in a block */
#pragma omp parallel num_threads(threads)
    {
        float *scores = (float *)malloc(sizeof(float) * (size_t)H * (size_t)(max_len > 0 ? max_len : 1));
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < B; b++) {
            const int L = seq_lens[b];
            const int32_t *table = block_tables + (int64_t)b * max_blocks;
            const float *qb = q + (int64_t)b * H * D;
            float *ob = out + (int64_t)b * H * D;
            for (int t = 0; t < L; t++) { /* scores[h * L + t] = q_h . k_t * scale, h = kh * G + g */
                const float *k = k_cache + ((int64_t)table[t / block_size] * block_size + t % block_size) * row;
                for (int h = 0; h < H; h++) {
                    const float *qh = qb + (int64_t)h * D, *kh = k + (int64_t)(h / G) * D;
                    float s = 0.f;
                    for (int d = 0; d < D; d++) s += qh[d] * kh[d];
                    scores[(int64_t)h * L + t] = s * scale;
                }
            }
            for (int h = 0; h < H; h++) { /* softmax over each head's row */
                float *sh = scores + (int64_t)h * L, m = -INFINITY, sum = 0.f;
                for (int t = 0; t < L; t++) m = sh[t] > m ? sh[t] : m;
                for (int t = 0; t < L; t++) { sh[t] = expf(sh[t] - m); sum += sh[t]; }
                const float inv = L > 0 ? 1.f / sum : 0.f;
                for (int t = 0; t < L; t++) sh[t] *= inv;
            }
            for (int i = 0; i < H * D; i++) ob[i] = 0.f;
            for (int t = 0; t < L; t++) {
                const float *v = v_cache + ((int64_t)table[t / block_size] * block_size + t % block_size) * row;
                for (int h = 0; h < H; h++) {
                    const float p = scores[(int64_t)h * L + t], *vh = v + (int64_t)(h / G) * D;
                    float *oh = ob + (int64_t)h * D;
                    for (int d = 0; d < D; d++) oh[d] += p * vh[d];
                }
            }
        }
        free(scores);
    }
}

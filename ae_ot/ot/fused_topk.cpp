// Fused score + top-1 / top-2 kernel for the CPU: s_j(x) = h_j + <x, y_j>, best one or two j per x.
//
// Compiled on first use by ae_ot/ot/fused.py (g++ -O3 -march=native) and called through ctypes;
// no Python or torch headers, so it builds in seconds. Why it exists: the tiled torch path
// (ae_ot/ot/kernels.py) writes every score to a cache tile with a GEMM and reads it back for the
// reduction, and its top-2 needs a second pass. Here the scores never leave the registers.
//
// Layout: 16 samples sit in the 16 lanes of one vector (GCC vector extensions, which compile to
// AVX-512, AVX2 or NEON as the CPU allows); the targets are walked T = 4 at a time, each score of
// a lane an FMA chain over the d coordinates, then folded into the lane's running best (and
// second best) with compares and blends. For d <= 16 the 16 transposed sample coordinates stay in
// registers for the whole walk over the targets.
//
// Ties: targets are visited in increasing index and only a strictly larger score replaces the
// best, so the lowest index wins among equal maxima, as torch.max; for the top 2, an equal score
// becomes the second best (gap 0). Scores are computed as h_j + sum_k x_k y_jk in FMA order, so
// they differ from a GEMM's in the last bits only.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
enum { LANES = 16, TARGETS_PER_STEP = 4 };

template <int K>
static inline void fold(vf score, int32_t j, vf& v1, vi& i1, vf& v2, vi& i2) {
  vi jv = (vi){} + j;
  vi better1 = score > v1;
  if (K == 2) {
    vi better2 = score > v2;
    vf nv2 = better1 ? v1 : (better2 ? score : v2);
    vi ni2 = better1 ? i1 : (better2 ? jv : i2);
    v2 = nv2;
    i2 = ni2;
  }
  v1 = better1 ? score : v1;
  i1 = better1 ? jv : i1;
}

// One block of up to 16 samples (rows), D > 0: compile-time dimension held in registers;
// D == 0: run-time dimension d, sample coordinates read from the transposed block in memory.
template <int D, int K>
static void block(const float* x, int64_t rows, int64_t d, const float* y, const float* h, int64_t n,
                  float* xt, float* vals, int64_t* idxs) {
  if (D > 0) d = D;
  for (int64_t k = 0; k < d; ++k)
    for (int64_t l = 0; l < LANES; ++l) xt[k * LANES + l] = l < rows ? x[l * d + k] : 0.f;
  const float inf = INFINITY;
  vf v1 = (vf){} - inf, v2 = (vf){} - inf;
  vi i1 = (vi){}, i2 = (vi){};
  vf xr[D > 0 ? D : 1];
  if (D > 0)
    for (int k = 0; k < D; ++k) xr[k] = *(const vf*)(xt + k * LANES);
  const int T = TARGETS_PER_STEP;
  int64_t j = 0;
  for (; j + T <= n; j += T) {
    vf acc[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = (vf){} + h[j + t];
    if (D > 0) {
#pragma GCC unroll 16
      for (int k = 0; k < D; ++k)
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) acc[t] += xr[k] * y[(j + t) * D + k];
    } else {
      for (int64_t k = 0; k < d; ++k) {
        vf xk = *(const vf*)(xt + k * LANES);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) acc[t] += xk * y[(j + t) * d + k];
      }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) fold<K>(acc[t], (int32_t)(j + t), v1, i1, v2, i2);
  }
  for (; j < n; ++j) {
    vf acc = (vf){} + h[j];
    for (int64_t k = 0; k < d; ++k) acc += *(const vf*)(xt + k * LANES) * y[j * d + k];
    fold<K>(acc, (int32_t)j, v1, i1, v2, i2);
  }
  for (int64_t l = 0; l < rows; ++l) {
    vals[l * K] = v1[l];
    idxs[l * K] = i1[l];
    if (K == 2) {
      vals[l * K + 1] = v2[l];
      idxs[l * K + 1] = i2[l];
    }
  }
}

template <int D, int K>
static void run(const float* x, int64_t m, int64_t d, const float* y, const float* h, int64_t n, float* xt,
                float* vals, int64_t* idxs) {
  for (int64_t r = 0; r < m; r += LANES) {
    int64_t rows = m - r < LANES ? m - r : LANES;
    block<D, K>(x + r * d, rows, d, y, h, n, xt, vals + r * K, idxs + r * K);
  }
}

template <int D>
static void dispatch_k(const float* x, int64_t m, int64_t d, const float* y, const float* h, int64_t n, int k,
                       float* xt, float* vals, int64_t* idxs) {
  if (k == 1)
    run<D, 1>(x, m, d, y, h, n, xt, vals, idxs);
  else
    run<D, 2>(x, m, d, y, h, n, xt, vals, idxs);
}

// x [m, d], y [n, d], h [n] row-major float32; vals [m, k] float32, idxs [m, k] int64 (k = 1, 2).
// Returns 0 on success, 1 for a bad argument, 2 when the scratch block cannot be allocated.
extern "C" int ae_ot_fused_topk(const float* x, int64_t m, int64_t d, const float* y, const float* h, int64_t n,
                                int k, float* vals, int64_t* idxs) {
  if (m < 0 || d < 1 || n < 1 || n > INT32_MAX || (k != 1 && k != 2)) return 1;
  float* xt = (float*)aligned_alloc(64, ((d * LANES * sizeof(float) + 63) / 64) * 64);
  if (!xt) return 2;
  switch (d) {
#define AE_OT_CASE(DD) \
  case DD:             \
    dispatch_k<DD>(x, m, d, y, h, n, k, xt, vals, idxs); \
    break;
    AE_OT_CASE(1) AE_OT_CASE(2) AE_OT_CASE(3) AE_OT_CASE(4) AE_OT_CASE(5) AE_OT_CASE(6) AE_OT_CASE(7)
    AE_OT_CASE(8) AE_OT_CASE(9) AE_OT_CASE(10) AE_OT_CASE(11) AE_OT_CASE(12) AE_OT_CASE(13) AE_OT_CASE(14)
    AE_OT_CASE(15) AE_OT_CASE(16)
#undef AE_OT_CASE
    default:
      dispatch_k<0>(x, m, d, y, h, n, k, xt, vals, idxs);
  }
  free(xt);
  return 0;
}

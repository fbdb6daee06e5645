// Softmax attention for x86 CPUs with AVX-512, float32: forward and backward as XLA FFI custom calls.
//
// Why: on a 2-core CPU, XLA runs attention's batched [L, 64] x [64, L] matmuls at 110-160 GFLOP/s and
// makes a memory pass over the [B, H, L, L] scores for each step of the softmax and its gradient. Here each
// (batch, head) is one task: a block of query rows goes through scores, softmax and P.V (forward), or
// dP, dS, dQ, dK and dV (backward) while it is in cache, with a register-blocked 12 x 32 FMA kernel.
// Inputs and outputs keep the model's [B, L, H, D] layout, so no transposes are needed either.
// Semantics are `roformer_jax.attention.softmax`'s: keys visible where key_mask and the segment ids
// agree; a masked score is the float32 minimum (a row that sees no key is uniform, as the reference's
// finite fill gives); masked scores and rows that see no key get no gradient.
// Built on first use by roformer_jax/kernels/cpu_attention.py (g++ -O3 -mavx512f -mavx512bw -mavx512vl).
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr float kMin = -3.4028234663852886e38f;

static inline __mmask16 lo_mask(int n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

// C[MR x n] (n <= 32) (+)= sum_k A(i, k) * B[k, 0:n];  A(i, k) = A[i*sai + k*sak].
// Accumulators are named variables (not an array), so GCC keeps all 2*MR of them in registers.
template <int MR>
static inline void mk(int K, const float* A, long sai, long sak, const float* B, long ldb,
                      float* C, long ldc, int n, bool acc) {
  const __mmask16 m0 = lo_mask(n), m1 = lo_mask(n - 16);
  const __m512 z = _mm512_setzero_ps();
  __m512 c0a = z, c0b = z;
  __m512 c1a = z, c1b = z;
  __m512 c2a = z, c2b = z;
  __m512 c3a = z, c3b = z;
  __m512 c4a = z, c4b = z;
  __m512 c5a = z, c5b = z;
  __m512 c6a = z, c6b = z;
  __m512 c7a = z, c7b = z;
  __m512 c8a = z, c8b = z;
  __m512 c9a = z, c9b = z;
  __m512 c10a = z, c10b = z;
  __m512 c11a = z, c11b = z;
  if (acc) {
    if constexpr (MR > 0) { c0a = _mm512_maskz_loadu_ps(m0, C + 0 * ldc); c0b = _mm512_maskz_loadu_ps(m1, C + 0 * ldc + 16); }
    if constexpr (MR > 1) { c1a = _mm512_maskz_loadu_ps(m0, C + 1 * ldc); c1b = _mm512_maskz_loadu_ps(m1, C + 1 * ldc + 16); }
    if constexpr (MR > 2) { c2a = _mm512_maskz_loadu_ps(m0, C + 2 * ldc); c2b = _mm512_maskz_loadu_ps(m1, C + 2 * ldc + 16); }
    if constexpr (MR > 3) { c3a = _mm512_maskz_loadu_ps(m0, C + 3 * ldc); c3b = _mm512_maskz_loadu_ps(m1, C + 3 * ldc + 16); }
    if constexpr (MR > 4) { c4a = _mm512_maskz_loadu_ps(m0, C + 4 * ldc); c4b = _mm512_maskz_loadu_ps(m1, C + 4 * ldc + 16); }
    if constexpr (MR > 5) { c5a = _mm512_maskz_loadu_ps(m0, C + 5 * ldc); c5b = _mm512_maskz_loadu_ps(m1, C + 5 * ldc + 16); }
    if constexpr (MR > 6) { c6a = _mm512_maskz_loadu_ps(m0, C + 6 * ldc); c6b = _mm512_maskz_loadu_ps(m1, C + 6 * ldc + 16); }
    if constexpr (MR > 7) { c7a = _mm512_maskz_loadu_ps(m0, C + 7 * ldc); c7b = _mm512_maskz_loadu_ps(m1, C + 7 * ldc + 16); }
    if constexpr (MR > 8) { c8a = _mm512_maskz_loadu_ps(m0, C + 8 * ldc); c8b = _mm512_maskz_loadu_ps(m1, C + 8 * ldc + 16); }
    if constexpr (MR > 9) { c9a = _mm512_maskz_loadu_ps(m0, C + 9 * ldc); c9b = _mm512_maskz_loadu_ps(m1, C + 9 * ldc + 16); }
    if constexpr (MR > 10) { c10a = _mm512_maskz_loadu_ps(m0, C + 10 * ldc); c10b = _mm512_maskz_loadu_ps(m1, C + 10 * ldc + 16); }
    if constexpr (MR > 11) { c11a = _mm512_maskz_loadu_ps(m0, C + 11 * ldc); c11b = _mm512_maskz_loadu_ps(m1, C + 11 * ldc + 16); }
  }
  for (int k = 0; k < K; k++) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, B + k * ldb), b1 = _mm512_maskz_loadu_ps(m1, B + k * ldb + 16);
    const float* a = A + k * sak;
    if constexpr (MR > 0) { const __m512 x = _mm512_set1_ps(a[0 * sai]); c0a = _mm512_fmadd_ps(x, b0, c0a); c0b = _mm512_fmadd_ps(x, b1, c0b); }
    if constexpr (MR > 1) { const __m512 x = _mm512_set1_ps(a[1 * sai]); c1a = _mm512_fmadd_ps(x, b0, c1a); c1b = _mm512_fmadd_ps(x, b1, c1b); }
    if constexpr (MR > 2) { const __m512 x = _mm512_set1_ps(a[2 * sai]); c2a = _mm512_fmadd_ps(x, b0, c2a); c2b = _mm512_fmadd_ps(x, b1, c2b); }
    if constexpr (MR > 3) { const __m512 x = _mm512_set1_ps(a[3 * sai]); c3a = _mm512_fmadd_ps(x, b0, c3a); c3b = _mm512_fmadd_ps(x, b1, c3b); }
    if constexpr (MR > 4) { const __m512 x = _mm512_set1_ps(a[4 * sai]); c4a = _mm512_fmadd_ps(x, b0, c4a); c4b = _mm512_fmadd_ps(x, b1, c4b); }
    if constexpr (MR > 5) { const __m512 x = _mm512_set1_ps(a[5 * sai]); c5a = _mm512_fmadd_ps(x, b0, c5a); c5b = _mm512_fmadd_ps(x, b1, c5b); }
    if constexpr (MR > 6) { const __m512 x = _mm512_set1_ps(a[6 * sai]); c6a = _mm512_fmadd_ps(x, b0, c6a); c6b = _mm512_fmadd_ps(x, b1, c6b); }
    if constexpr (MR > 7) { const __m512 x = _mm512_set1_ps(a[7 * sai]); c7a = _mm512_fmadd_ps(x, b0, c7a); c7b = _mm512_fmadd_ps(x, b1, c7b); }
    if constexpr (MR > 8) { const __m512 x = _mm512_set1_ps(a[8 * sai]); c8a = _mm512_fmadd_ps(x, b0, c8a); c8b = _mm512_fmadd_ps(x, b1, c8b); }
    if constexpr (MR > 9) { const __m512 x = _mm512_set1_ps(a[9 * sai]); c9a = _mm512_fmadd_ps(x, b0, c9a); c9b = _mm512_fmadd_ps(x, b1, c9b); }
    if constexpr (MR > 10) { const __m512 x = _mm512_set1_ps(a[10 * sai]); c10a = _mm512_fmadd_ps(x, b0, c10a); c10b = _mm512_fmadd_ps(x, b1, c10b); }
    if constexpr (MR > 11) { const __m512 x = _mm512_set1_ps(a[11 * sai]); c11a = _mm512_fmadd_ps(x, b0, c11a); c11b = _mm512_fmadd_ps(x, b1, c11b); }
  }
  if constexpr (MR > 0) { _mm512_mask_storeu_ps(C + 0 * ldc, m0, c0a); _mm512_mask_storeu_ps(C + 0 * ldc + 16, m1, c0b); }
  if constexpr (MR > 1) { _mm512_mask_storeu_ps(C + 1 * ldc, m0, c1a); _mm512_mask_storeu_ps(C + 1 * ldc + 16, m1, c1b); }
  if constexpr (MR > 2) { _mm512_mask_storeu_ps(C + 2 * ldc, m0, c2a); _mm512_mask_storeu_ps(C + 2 * ldc + 16, m1, c2b); }
  if constexpr (MR > 3) { _mm512_mask_storeu_ps(C + 3 * ldc, m0, c3a); _mm512_mask_storeu_ps(C + 3 * ldc + 16, m1, c3b); }
  if constexpr (MR > 4) { _mm512_mask_storeu_ps(C + 4 * ldc, m0, c4a); _mm512_mask_storeu_ps(C + 4 * ldc + 16, m1, c4b); }
  if constexpr (MR > 5) { _mm512_mask_storeu_ps(C + 5 * ldc, m0, c5a); _mm512_mask_storeu_ps(C + 5 * ldc + 16, m1, c5b); }
  if constexpr (MR > 6) { _mm512_mask_storeu_ps(C + 6 * ldc, m0, c6a); _mm512_mask_storeu_ps(C + 6 * ldc + 16, m1, c6b); }
  if constexpr (MR > 7) { _mm512_mask_storeu_ps(C + 7 * ldc, m0, c7a); _mm512_mask_storeu_ps(C + 7 * ldc + 16, m1, c7b); }
  if constexpr (MR > 8) { _mm512_mask_storeu_ps(C + 8 * ldc, m0, c8a); _mm512_mask_storeu_ps(C + 8 * ldc + 16, m1, c8b); }
  if constexpr (MR > 9) { _mm512_mask_storeu_ps(C + 9 * ldc, m0, c9a); _mm512_mask_storeu_ps(C + 9 * ldc + 16, m1, c9b); }
  if constexpr (MR > 10) { _mm512_mask_storeu_ps(C + 10 * ldc, m0, c10a); _mm512_mask_storeu_ps(C + 10 * ldc + 16, m1, c10b); }
  if constexpr (MR > 11) { _mm512_mask_storeu_ps(C + 11 * ldc, m0, c11a); _mm512_mask_storeu_ps(C + 11 * ldc + 16, m1, c11b); }
}

// C[m x n] (+)= A(m x K) B(K x n), any m, n: tiles of 12 x 32.
static inline void gemm(int m, int n, int K, const float* A, long sai, long sak, const float* B, long ldb,
                        float* C, long ldc, bool acc) {
  for (int j = 0; j < n; j += 32) {
    const int nj = std::min(32, n - j);
    int i = 0;
    for (; i + 12 <= m; i += 12) mk<12>(K, A + i * sai, sai, sak, B + j, ldb, C + i * ldc + j, ldc, nj, acc);
    const int r = m - i;
    const float* a = A + i * sai; float* c = C + i * ldc + j;
    switch (r) {
      case 0: break;
      case 1: mk<1>(K, a, sai, sak, B + j, ldb, c, ldc, nj, acc); break;
      case 2: mk<2>(K, a, sai, sak, B + j, ldb, c, ldc, nj, acc); break;
      case 3: mk<3>(K, a, sai, sak, B + j, ldb, c, ldc, nj, acc); break;
      case 4: mk<4>(K, a, sai, sak, B + j, ldb, c, ldc, nj, acc); break;
      case 5: mk<5>(K, a, sai, sak, B + j, ldb, c, ldc, nj, acc); break;
      case 6: mk<6>(K, a, sai, sak, B + j, ldb, c, ldc, nj, acc); break;
      case 7: mk<7>(K, a, sai, sak, B + j, ldb, c, ldc, nj, acc); break;
      case 8: mk<8>(K, a, sai, sak, B + j, ldb, c, ldc, nj, acc); break;
      case 9: mk<9>(K, a, sai, sak, B + j, ldb, c, ldc, nj, acc); break;
      case 10: mk<10>(K, a, sai, sak, B + j, ldb, c, ldc, nj, acc); break;
      default: mk<11>(K, a, sai, sak, B + j, ldb, c, ldc, nj, acc); break;
    }
  }
}

// exp for x in [-inf-ish, 88]: Cody-Waite reduction, degree-6 polynomial, scalef.
static inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

struct Dims { int B, Lq, Lk, H, D; };

// Softmax of one row s[0:Lk] in place, keys visible where kmask[j] && (qseg == kseg[j]) (kseg may be null).
static inline void softmax_row(float* s, int Lk, const uint8_t* kmask, const int32_t* kseg, int32_t qseg) {
  __m512 mx = _mm512_set1_ps(kMin);
  const __m512 vmin = _mm512_set1_ps(kMin);
  const __m512i vq = _mm512_set1_epi32(qseg);
  for (int j = 0; j < Lk; j += 16) {
    const __mmask16 m = lo_mask(Lk - j);
    __m128i km8 = _mm_maskz_loadu_epi8(m, kmask + j);
    __mmask16 vis = _mm_test_epi8_mask(km8, km8) & m;
    if (kseg) vis &= _mm512_mask_cmpeq_epi32_mask(m, _mm512_maskz_loadu_epi32(m, kseg + j), vq);
    __m512 x = _mm512_mask_blend_ps(vis, vmin, _mm512_maskz_loadu_ps(m, s + j));
    _mm512_mask_storeu_ps(s + j, m, x);
    mx = _mm512_mask_max_ps(mx, m, mx, x);
  }
  const __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  for (int j = 0; j < Lk; j += 16) {
    const __mmask16 m = lo_mask(Lk - j);
    __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), vmax));
    e = _mm512_maskz_mov_ps(m, e);
    sum = _mm512_add_ps(sum, e);
    _mm512_mask_storeu_ps(s + j, m, e);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
  for (int j = 0; j < Lk; j += 16) {
    const __mmask16 m = lo_mask(Lk - j);
    _mm512_mask_storeu_ps(s + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + j), inv));
  }
}

// dst[e * L + j] = src[j * stride + e] for j < L, e < D: one head of [L, H, D] as [D, L], the B operand of
// S = Q K^T (and dP = dO V^T). 16 rows at a time, gathered, so every store is a whole vector.
static inline void pack_transposed(float* dst, const float* src, int L, int D, long stride) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                         _mm512_set1_epi32((int)stride));
  for (int j = 0; j < L; j += 16) {
    const __mmask16 m = lo_mask(L - j);
    const float* row = src + (long)j * stride;
    for (int e = 0; e < D; e++)
      _mm512_mask_storeu_ps(dst + (long)e * L + j, m, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, row + e, 4));
  }
}

// Copies n floats to dst, bypassing the cache where dst is 64-byte aligned: P is written once here and read
// back only by the backward, so streaming it out saves the read-for-ownership of every line.
static inline void stream_copy(float* dst, const float* src, long n) {
  if (reinterpret_cast<uintptr_t>(dst) % 64 != 0 || n % 16 != 0) { std::memcpy(dst, src, n * sizeof(float)); return; }
  for (long i = 0; i < n; i += 16) _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
}

// One (b, h): q [B,Lq,H,D], k, v [B,Lk,H,D]; p [B,H,Lq,Lk]; o [B,Lq,H,D]. kt: scratch [D*Lk]; sbuf: [Mb*Lk].
static void fwd_head(const Dims& d, int b, int h, const float* q, const float* k, const float* v,
                     const uint8_t* kmask, const int32_t* kseg, const int32_t* qseg,
                     float* p, float* o, float* kt, float* sbuf, int Mb) {
  const long HD = (long)d.H * d.D;
  const float* kb = k + (long)b * d.Lk * HD + h * d.D;
  pack_transposed(kt, kb, d.Lk, d.D, HD);
  const uint8_t* km = kmask + (long)b * d.Lk;
  const int32_t* ks = kseg ? kseg + (long)b * d.Lk : nullptr;
  const int32_t* qs = qseg ? qseg + (long)b * d.Lq : nullptr;
  float* pb = p + ((long)b * d.H + h) * d.Lq * d.Lk;
  const float* vb = v + (long)b * d.Lk * HD + h * d.D;
  for (int i0 = 0; i0 < d.Lq; i0 += Mb) {
    const int mb = std::min(Mb, d.Lq - i0);
    const float* qb = q + ((long)b * d.Lq + i0) * HD + h * d.D;
    float* s = sbuf;  // the block's scores stay in cache through softmax and P.V
    gemm(mb, d.Lk, d.D, qb, HD, 1, kt, d.Lk, s, d.Lk, false);
    for (int i = 0; i < mb; i++) softmax_row(s + (long)i * d.Lk, d.Lk, km, ks, qs ? qs[i0 + i] : 0);
    gemm(mb, d.D, d.Lk, s, d.Lk, 1, vb, HD, o + ((long)b * d.Lq + i0) * HD + h * d.D, HD, false);
    stream_copy(pb + (long)i0 * d.Lk, s, (long)mb * d.Lk);
  }
  _mm_sfence();
}
// 1 where row i of the query block sees at least one key.
static inline bool row_sees_any(int Lk, const uint8_t* kmask, const int32_t* kseg, int32_t qseg) {
  const __m512i vq = _mm512_set1_epi32(qseg);
  for (int j = 0; j < Lk; j += 16) {
    const __mmask16 m = lo_mask(Lk - j);
    __m128i km8 = _mm_maskz_loadu_epi8(m, kmask + j);
    __mmask16 vis = _mm_test_epi8_mask(km8, km8) & m;
    if (kseg) vis &= _mm512_mask_cmpeq_epi32_mask(m, _mm512_maskz_loadu_epi32(m, kseg + j), vq);
    if (vis) return true;
  }
  return false;
}

// One (b, h) of the backward. dq = dS K (unscaled), dk = dS^T q, dv = P^T dO; all [B, L, H, D].
static void bwd_head(const Dims& d, int b, int h, const float* q, const float* k, const float* v,
                     const float* o, const float* dout, const float* p,
                     const uint8_t* kmask, const int32_t* kseg, const int32_t* qseg,
                     float* dq, float* dk, float* dv, float* vt, float* ds, int Mb) {
  const long HD = (long)d.H * d.D;
  const long kofs = (long)b * d.Lk * HD + h * d.D;
  pack_transposed(vt, v + kofs, d.Lk, d.D, HD);
  for (int j = 0; j < d.Lk; j++) {
    std::memset(dk + kofs + j * HD, 0, d.D * sizeof(float));
    std::memset(dv + kofs + j * HD, 0, d.D * sizeof(float));
  }
  const uint8_t* km = kmask + (long)b * d.Lk;
  const int32_t* ks = kseg ? kseg + (long)b * d.Lk : nullptr;
  const int32_t* qs = qseg ? qseg + (long)b * d.Lq : nullptr;
  const float* pb = p + ((long)b * d.H + h) * d.Lq * d.Lk;
  for (int i0 = 0; i0 < d.Lq; i0 += Mb) {
    const int mb = std::min(Mb, d.Lq - i0);
    const long qofs = ((long)b * d.Lq + i0) * HD + h * d.D;
    const float* pblk = pb + (long)i0 * d.Lk;
    gemm(mb, d.Lk, d.D, dout + qofs, HD, 1, vt, d.Lk, ds, d.Lk, false);  // dP
    for (int i = 0; i < mb; i++) {
      float* dsr = ds + (long)i * d.Lk;
      if (!row_sees_any(d.Lk, km, ks, qs ? qs[i0 + i] : 0)) { std::memset(dsr, 0, d.Lk * sizeof(float)); continue; }
      const float* orow = o + qofs + i * HD; const float* drow = dout + qofs + i * HD;
      float delta = 0.f;
      for (int e = 0; e < d.D; e++) delta += orow[e] * drow[e];
      const __m512 vd = _mm512_set1_ps(delta);
      const float* pr = pblk + (long)i * d.Lk;
      for (int j = 0; j < d.Lk; j += 16) {
        const __mmask16 m = lo_mask(d.Lk - j);
        _mm512_mask_storeu_ps(dsr + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, pr + j), _mm512_sub_ps(_mm512_maskz_loadu_ps(m, dsr + j), vd)));
      }
    }
    gemm(mb, d.D, d.Lk, ds, d.Lk, 1, k + kofs, HD, dq + qofs, HD, false);            // dQ = dS K
    // (As dK^T += Q^T dS, [D, Lk], B would be contiguous rows of dS, but M = D = 64 tiles no better here.)
    gemm(d.Lk, d.D, mb, ds, 1, d.Lk, q + qofs, HD, dk + kofs, HD, true);             // dK += dS^T Q
    gemm(d.Lk, d.D, mb, pblk, 1, d.Lk, dout + qofs, HD, dv + kofs, HD, true);        // dV += P^T dO
  }
}

// Runs fn(task) for task in [0, n) on XLA's intra-op pool and the calling thread. The caller works too,
// so a pool busy with other ops only costs parallelism; helpers that start late find no work left.
template <typename F>
void parallel_for(ffi::ThreadPool& pool, int n, F fn) {
  struct State { std::atomic<int> next{0}, done{0}; };
  auto st = std::make_shared<State>();
  auto work = [st, n, fn]() {
    for (int t; (t = st->next.fetch_add(1)) < n;) { fn(t); st->done.fetch_add(1); }
  };
  const int helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int i = 0; i < helpers; i++) pool.Schedule(decltype(work)(work));
  work();
  while (st->done.load() < n) std::this_thread::yield();
}

ffi::Error check(const ffi::Buffer<ffi::F32>& x, const char* name, int64_t B, int64_t L, int64_t H, int64_t D) {
  auto d = x.dimensions();
  if (d.size() != 4 || d[0] != B || d[1] != L || d[2] != H || d[3] != D)
    return ffi::Error::InvalidArgument(std::string("cpu_attention: ") + name + " has the wrong shape");
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                   ffi::Buffer<ffi::PRED> key_mask, ffi::Buffer<ffi::S32> key_seg, ffi::Buffer<ffi::S32> query_seg,
                   ffi::ResultBuffer<ffi::F32> o, ffi::ResultBuffer<ffi::F32> p) {
  auto qd = q.dimensions(), kd = k.dimensions();
  if (qd.size() != 4 || kd.size() != 4) return ffi::Error::InvalidArgument("cpu_attention: q, k must be [B, L, H, D]");
  const Dims d{(int)qd[0], (int)qd[1], (int)kd[1], (int)qd[2], (int)qd[3]};
  if (auto e = check(k, "k", d.B, d.Lk, d.H, d.D); e.failure()) return e;
  if (auto e = check(v, "v", d.B, d.Lk, d.H, d.D); e.failure()) return e;
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  const uint8_t* km = reinterpret_cast<const uint8_t*>(key_mask.typed_data());
  const int32_t *ks = key_seg.typed_data(), *qs = query_seg.typed_data();
  float *op = o->typed_data(), *pp = p->typed_data();
  parallel_for(pool, d.B * d.H, [=](int t) {
    thread_local std::vector<float> kt, sbuf;
    kt.resize((size_t)d.D * d.Lk);
    sbuf.resize((size_t)64 * d.Lk);
    fwd_head(d, t / d.H, t % d.H, qp, kp, vp, km, ks, qs, pp, op, kt.data(), sbuf.data(), 64);
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                    ffi::Buffer<ffi::F32> o, ffi::Buffer<ffi::F32> dout, ffi::Buffer<ffi::F32> p,
                    ffi::Buffer<ffi::PRED> key_mask, ffi::Buffer<ffi::S32> key_seg, ffi::Buffer<ffi::S32> query_seg,
                    ffi::ResultBuffer<ffi::F32> dq, ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv) {
  auto qd = q.dimensions(), kd = k.dimensions();
  if (qd.size() != 4 || kd.size() != 4) return ffi::Error::InvalidArgument("cpu_attention: q, k must be [B, L, H, D]");
  const Dims d{(int)qd[0], (int)qd[1], (int)kd[1], (int)qd[2], (int)qd[3]};
  if (auto e = check(o, "o", d.B, d.Lq, d.H, d.D); e.failure()) return e;
  if (auto e = check(dout, "dout", d.B, d.Lq, d.H, d.D); e.failure()) return e;
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data(), *opp = o.typed_data(),
              *dop = dout.typed_data(), *pp = p.typed_data();
  const uint8_t* km = reinterpret_cast<const uint8_t*>(key_mask.typed_data());
  const int32_t *ks = key_seg.typed_data(), *qs = query_seg.typed_data();
  float *dqp = dq->typed_data(), *dkp = dk->typed_data(), *dvp = dv->typed_data();
  parallel_for(pool, d.B * d.H, [=](int t) {
    thread_local std::vector<float> vt, ds;
    vt.resize((size_t)d.D * d.Lk);
    ds.resize((size_t)64 * d.Lk);
    bwd_head(d, t / d.H, t % d.H, qp, kp, vp, opp, dop, pp, km, ks, qs, dqp, dkp, dvp, vt.data(), ds.data(), 64);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjCpuAttentionFwd, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjCpuAttentionBwd, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

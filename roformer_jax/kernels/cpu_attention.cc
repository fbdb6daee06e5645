// Softmax attention for x86 CPUs with AVX-512, float32: forward and backward as XLA FFI custom calls.
//
// Why: on a 2-core CPU, XLA runs attention's batched [L, 64] x [64, L] matmuls at 110-160 GFLOP/s and
// makes a memory pass over the [B, H, L, L] scores for each step of the softmax and its gradient. Here each
// (batch, head) is one task: a block of query rows goes through scores, softmax and P.V (forward), or
// dP, dS, dQ, dK and dV (backward) while it is in cache, with a register-blocked 12 x 32 FMA kernel.
// Inputs and outputs keep the model's [B, L, H, D] layout, so no transposes are needed either.
// Semantics are `roformer_jax.attention.softmax`'s: keys visible where key_mask is set and the ids agree:
// equal segment ids, or with the `causal` attribute, causal ids (UniLM's seq2seq mask, a causal LM) where
// the key's id is <= the query's; a masked score is the float32 minimum (a row that sees no key is uniform, as the reference's
// finite fill gives); masked scores and rows that see no key get no gradient.
// Built on first use by roformer_jax/kernels/cpu_attention.py (g++ -O3 -mavx512f -mavx512bw -mavx512vl).
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr float kMin = -3.4028234663852886e38f;

static inline __mmask16 lo_mask(int n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

// C[MR x n] (n <= 32) (+)= sum_k A(i, k) * B[k, 0:n];  A(i, k) = A[i*sai + k*sak].
// Accumulators are named variables (not an array: GCC spilled those to the stack on every FMA, 43 vs
// 106 GFLOP/s), so all 2*MR of them stay in registers. RJ_ROWS(X) expands X once per row.
#define RJ_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
template <int MR>
static inline void mk(int K, const float* A, long sai, long sak, const float* B, long ldb,
                      float* C, long ldc, int n, bool acc) {
  const __mmask16 m0 = lo_mask(n), m1 = lo_mask(n - 16);
  const __m512 z = _mm512_setzero_ps();
#define RJ_DECLARE(r) __m512 c##r##a = z, c##r##b = z;
#define RJ_LOAD(r) if constexpr (MR > r) { c##r##a = _mm512_maskz_loadu_ps(m0, C + r * ldc); \
                                           c##r##b = _mm512_maskz_loadu_ps(m1, C + r * ldc + 16); }
#define RJ_FMA(r) if constexpr (MR > r) { const __m512 x = _mm512_set1_ps(a[r * sai]); \
                                          c##r##a = _mm512_fmadd_ps(x, b0, c##r##a); c##r##b = _mm512_fmadd_ps(x, b1, c##r##b); }
#define RJ_STORE(r) if constexpr (MR > r) { _mm512_mask_storeu_ps(C + r * ldc, m0, c##r##a); \
                                            _mm512_mask_storeu_ps(C + r * ldc + 16, m1, c##r##b); }
  RJ_ROWS(RJ_DECLARE)
  if (acc) { RJ_ROWS(RJ_LOAD) }
  for (int k = 0; k < K; k++) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, B + k * ldb), b1 = _mm512_maskz_loadu_ps(m1, B + k * ldb + 16);
    const float* a = A + k * sak;
    RJ_ROWS(RJ_FMA)
  }
  RJ_ROWS(RJ_STORE)
#undef RJ_DECLARE
#undef RJ_LOAD
#undef RJ_FMA
#undef RJ_STORE
}

using Kernel = void (*)(int, const float*, long, long, const float*, long, float*, long, int, bool);
constexpr Kernel kRest[12] = {nullptr, mk<1>, mk<2>, mk<3>, mk<4>, mk<5>, mk<6>, mk<7>, mk<8>, mk<9>, mk<10>, mk<11>};

// C[m x n] (+)= A(m x K) B(K x n), any m, n: tiles of 12 x 32.
static inline void gemm(int m, int n, int K, const float* A, long sai, long sak, const float* B, long ldb,
                        float* C, long ldc, bool acc) {
  for (int j = 0; j < n; j += 32) {
    const int nj = std::min(32, n - j);
    int i = 0;
    for (; i + 12 <= m; i += 12) mk<12>(K, A + i * sai, sai, sak, B + j, ldb, C + i * ldc + j, ldc, nj, acc);
    if (i < m) kRest[m - i](K, A + i * sai, sai, sak, B + j, ldb, C + i * ldc + j, ldc, nj, acc);
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

struct Dims { int B, Lq, Lk, H, D; bool causal; };

// Which of 16 keys (lanes in m) a query with id vq sees: key_mask set and, with ids, the same segment id
// (or, causal, a key id <= the query's).
static inline __mmask16 visible16(__mmask16 m, const uint8_t* kmask, const int32_t* kseg, __m512i vq, bool causal) {
  const __m128i km8 = _mm_maskz_loadu_epi8(m, kmask);
  __mmask16 vis = _mm_test_epi8_mask(km8, km8) & m;
  if (kseg) {
    const __m512i ids = _mm512_maskz_loadu_epi32(m, kseg);
    vis &= causal ? _mm512_mask_cmple_epi32_mask(m, ids, vq) : _mm512_mask_cmpeq_epi32_mask(m, ids, vq);
  }
  return vis;
}

// Softmax of one row s[0:Lk] in place, keys visible as `visible16` says (kseg may be null).
static inline void softmax_row(float* s, int Lk, const uint8_t* kmask, const int32_t* kseg, int32_t qseg, bool causal) {
  __m512 mx = _mm512_set1_ps(kMin);
  const __m512 vmin = _mm512_set1_ps(kMin);
  const __m512i vq = _mm512_set1_epi32(qseg);
  for (int j = 0; j < Lk; j += 16) {
    const __mmask16 m = lo_mask(Lk - j), vis = visible16(m, kmask + j, kseg ? kseg + j : nullptr, vq, causal);
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
    for (int i = 0; i < mb; i++) softmax_row(s + (long)i * d.Lk, d.Lk, km, ks, qs ? qs[i0 + i] : 0, d.causal);
    gemm(mb, d.D, d.Lk, s, d.Lk, 1, vb, HD, o + ((long)b * d.Lq + i0) * HD + h * d.D, HD, false);
    stream_copy(pb + (long)i0 * d.Lk, s, (long)mb * d.Lk);
  }
  _mm_sfence();
}

// 1 where row i of the query block sees at least one key.
static inline bool row_sees_any(int Lk, const uint8_t* kmask, const int32_t* kseg, int32_t qseg, bool causal) {
  const __m512i vq = _mm512_set1_epi32(qseg);
  for (int j = 0; j < Lk; j += 16) {
    if (visible16(lo_mask(Lk - j), kmask + j, kseg ? kseg + j : nullptr, vq, causal)) return true;
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
      if (!row_sees_any(d.Lk, km, ks, qs ? qs[i0 + i] : 0, d.causal)) { std::memset(dsr, 0, d.Lk * sizeof(float)); continue; }
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

using F32 = ffi::Buffer<ffi::F32>;
using Pred = ffi::Buffer<ffi::PRED>;
using S32 = ffi::Buffer<ffi::S32>;
using Out = ffi::ResultBuffer<ffi::F32>;

// Dims from q [B, Lq, H, D] and k [B, Lk, H, D]; the error names the operand whose shape disagrees.
ffi::Error decode(const F32& q, const F32& k, std::initializer_list<std::pair<const char*, const F32*>> like_q,
                  std::initializer_list<std::pair<const char*, const F32*>> like_k, bool causal, Dims* d) {
  auto qd = q.dimensions(), kd = k.dimensions();
  if (qd.size() != 4 || kd.size() != 4) return ffi::Error::InvalidArgument("cpu_attention: q, k must be [B, L, H, D]");
  *d = Dims{(int)qd[0], (int)qd[1], (int)kd[1], (int)qd[2], (int)qd[3], causal};
  for (auto [lists, len] : {std::pair{like_q, d->Lq}, std::pair{like_k, d->Lk}})
    for (auto [name, x] : lists) {
      auto xd = x->dimensions();
      if (xd.size() != 4 || xd[0] != d->B || xd[1] != len || xd[2] != d->H || xd[3] != d->D)
        return ffi::Error::InvalidArgument(std::string("cpu_attention: ") + name + " has the wrong shape");
    }
  return ffi::Error::Success();
}

// The mask operands must be [B, Lk] (key_mask, key_seg) and [B, Lq] (query_seg): the kernel indexes them so.
ffi::Error check_masks(const Dims& d, const Pred& key_mask, const S32& key_seg, const S32& query_seg) {
  auto is = [](auto dims, int b, int l) { return dims.size() == 2 && dims[0] == b && dims[1] == l; };
  if (!is(key_mask.dimensions(), d.B, d.Lk)) return ffi::Error::InvalidArgument("cpu_attention: key_mask has the wrong shape");
  if (!is(key_seg.dimensions(), d.B, d.Lk)) return ffi::Error::InvalidArgument("cpu_attention: key_seg has the wrong shape");
  if (!is(query_seg.dimensions(), d.B, d.Lq)) return ffi::Error::InvalidArgument("cpu_attention: query_seg has the wrong shape");
  return ffi::Error::Success();
}

const uint8_t* bytes(const Pred& x) { return reinterpret_cast<const uint8_t*>(x.typed_data()); }

ffi::Error Forward(ffi::ThreadPool pool, F32 q, F32 k, F32 v, Pred key_mask, S32 key_seg, S32 query_seg, Out o, Out p,
                   int32_t causal) {
  Dims d;
  if (auto e = decode(q, k, {}, {{"k", &k}, {"v", &v}}, causal != 0, &d); e.failure()) return e;
  if (auto e = check_masks(d, key_mask, key_seg, query_seg); e.failure()) return e;
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  const uint8_t* km = bytes(key_mask);
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

ffi::Error Backward(ffi::ThreadPool pool, F32 q, F32 k, F32 v, F32 o, F32 dout, F32 p, Pred key_mask, S32 key_seg,
                    S32 query_seg, Out dq, Out dk, Out dv, int32_t causal) {
  Dims d;
  if (auto e = decode(q, k, {{"o", &o}, {"dout", &dout}}, {{"v", &v}}, causal != 0, &d); e.failure()) return e;
  if (auto e = check_masks(d, key_mask, key_seg, query_seg); e.failure()) return e;
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data(), *opp = o.typed_data(),
              *dop = dout.typed_data(), *pp = p.typed_data();
  const uint8_t* km = bytes(key_mask);
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
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<Pred>().Arg<S32>().Arg<S32>().Ret<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("causal"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjCpuAttentionBwd, Backward,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<Pred>().Arg<S32>().Arg<S32>()
                                  .Ret<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("causal"));

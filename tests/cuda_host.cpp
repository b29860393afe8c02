// Runs retina's CUDA kernels (retina/kernels/cuda/*.cu, retina/insilico/cuda/*.cu) on the CPU, to check their indexing without a GPU.
//
// The CUDA keywords become plain C++ and every kernel is launched with blocks of ONE thread: the
// grid-stride loops then visit every element from a single "thread", and the one-block-per-weight
// reductions run block by block (block_sum over a single thread is the identity).  This checks what
// can be wrong in a kernel's logic (indices, bounds, strides, which element each thread writes); it
// cannot check races or occupancy, which only a GPU run can.  Compiled by tests/test_cuda_host.py
// with the host C++ compiler and called through ctypes.
#include <cmath>

struct Dim3 { long long x; };
static Dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __shared__ static
#define __restrict__
#define __syncthreads()
using std::exp;
using std::log1p;

#include "../retina/kernels/cuda/conv.cu"
#include "../retina/insilico/cuda/insilico.cu"

static void one_thread(long long n_blocks) {
    threadIdx.x = 0;
    blockDim.x = 1;
    gridDim.x = n_blocks;
}

#define GRID_STRIDE(NAME, ...)                                                                  \
    one_thread(1);                                                                               \
    blockIdx.x = 0;                                                                              \
    NAME<double>(__VA_ARGS__);

#define PER_BLOCK(N, NAME, ...)                                                                  \
    one_thread(N);                                                                               \
    for (long long b = 0; b < (N); ++b) {                                                        \
        blockIdx.x = b;                                                                          \
        NAME<double>(__VA_ARGS__);                                                               \
    }

extern "C" {
void h_corr2d_fwd(const double* x, const double* w, double* o, int n, int ci, int h, int wd, int co, int kh, int kw,
                  int ho, int wo) {
    GRID_STRIDE(corr2d_fwd, x, w, o, n, ci, h, wd, co, kh, kw, ho, wo)
}
void h_corr2d_t(const double* g, const double* w, double* o, int n, int ci, int h, int wd, int co, int kh, int kw,
                int ho, int wo) {
    GRID_STRIDE(corr2d_t, g, w, o, n, ci, h, wd, co, kh, kw, ho, wo)
}
void h_corr2d_wgrad(const double* x, const double* g, double* o, int n, int ci, int h, int wd, int co, int kh,
                    int kw, int ho, int wo) {
    PER_BLOCK((long long)co * ci * kh * kw, corr2d_wgrad, x, g, o, n, ci, h, wd, co, kh, kw, ho, wo)
}
void h_corr3d_movie_fwd(const double* x, const double* w, double* o, int t, int h, int wd, int c, int k, int kh,
                        int kw, int ho, int wo) {
    GRID_STRIDE(corr3d_movie_fwd, x, w, o, t, h, wd, c, k, kh, kw, ho, wo)
}
void h_corr3d_movie_t(const double* g, const double* w, double* o, int n, int c, int k, int kh, int kw, int ho,
                      int wo, int h, int wd) {
    GRID_STRIDE(corr3d_movie_t, g, w, o, n, c, k, kh, kw, ho, wo, h, wd)
}
void h_corr3d_movie_wgrad(const double* x, const double* g, double* o, int n, int c, int k, int kh, int kw, int ho,
                          int wo, int h, int wd) {
    PER_BLOCK((long long)c * k * kh * kw, corr3d_movie_wgrad, x, g, o, n, c, k, kh, kw, ho, wo, h, wd)
}
void h_bipolar_block(const double* s, const double* drive, const double* decay, const long long* n_stages,
                     const double* a2, const double* theta, const double* rec, const double* use, double* cascade,
                     double* pool, double* out, int t_len, int n_px, int n_k, int max_stages) {
    PER_BLOCK((long long)n_px * n_k, bipolar_block, s, drive, decay, n_stages, a2, theta, rec, use, cascade, pool,
              out, t_len, n_px, n_k, max_stages)
}
void h_ganglion_block(const double* exc, const double* inh, const double* w, const double* w_inh,
                      const double* theta, const double* r_max, double beta, double e_inh, double e_mem,
                      double rec_inh, double use_inh, double theta_inh, double gc_gain, double e_gc,
                      double* state_inh,
                      double* state_dep, double* state_u, double* state_gc, double* rates, double* parts,
                      int t_len, int n_k, int n_j) {
    PER_BLOCK(n_j, ganglion_block, exc, inh, w, w_inh, theta, r_max, beta, e_inh, e_mem, rec_inh, use_inh, theta_inh,
              gc_gain, e_gc, state_inh, state_dep, state_u, state_gc, rates, parts, t_len, n_k, n_j)
}
}

// Direct correlation kernels of retina's GPU backend (retina/kernels/gpu.py).
//
// Same conventions as the Numba kernels (retina/kernels/cpu.py): C-contiguous
// arrays, "valid" cross-correlation with stride 1, one output per window of K
// frames for movies.  Templated over the float type (float or double);
// gpu.py instantiates them through CuPy's name expressions.  Every output
// element is written by exactly one thread (no atomics, no pre-zeroing).
//
// Indices are 64-bit: a movie's layer-1 output easily exceeds 2^31 elements.

typedef long long i64;

// ---------------------------------------------------------------- layer 2
// x (N, Ci, H, W), w (Co, Ci, kh, kw) -> out (N, Co, Ho, Wo); one thread per output.
template <typename T>
__global__ void corr2d_fwd(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ out,
                           int n_b, int ci_n, int h, int wd, int co_n, int kh, int kw, int ho, int wo) {
    i64 total = (i64)n_b * co_n * ho * wo;
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        int xx = idx % wo;
        int y = (idx / wo) % ho;
        int o = (idx / ((i64)wo * ho)) % co_n;
        i64 n = idx / ((i64)wo * ho * co_n);
        T acc = 0;
        for (int c = 0; c < ci_n; ++c) {
            const T* xp = x + ((n * ci_n + c) * h + y) * wd + xx;
            const T* wp = w + ((i64)o * ci_n + c) * kh * kw;
            for (int u = 0; u < kh; ++u)
                for (int v = 0; v < kw; ++v)
                    acc += wp[u * kw + v] * xp[(i64)u * wd + v];
        }
        out[idx] = acc;
    }
}

// Adjoint of corr2d_fwd: g (N, Co, Ho, Wo), w (Co, Ci, kh, kw) -> out (N, Ci, H, W).
// Gather form: one thread per input pixel sums the outputs it fed.
template <typename T>
__global__ void corr2d_t(const T* __restrict__ g, const T* __restrict__ w, T* __restrict__ out,
                         int n_b, int ci_n, int h, int wd, int co_n, int kh, int kw, int ho, int wo) {
    i64 total = (i64)n_b * ci_n * h * wd;
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        int xx = idx % wd;
        int y = (idx / wd) % h;
        int c = (idx / ((i64)wd * h)) % ci_n;
        i64 n = idx / ((i64)wd * h * ci_n);
        T acc = 0;
        for (int o = 0; o < co_n; ++o) {
            const T* gp = g + (n * co_n + o) * (i64)ho * wo;
            const T* wp = w + ((i64)o * ci_n + c) * kh * kw;
            for (int u = 0; u < kh; ++u) {
                int yo = y - u;
                if (yo < 0 || yo >= ho) continue;
                for (int v = 0; v < kw; ++v) {
                    int xo = xx - v;
                    if (xo < 0 || xo >= wo) continue;
                    acc += wp[u * kw + v] * gp[(i64)yo * wo + xo];
                }
            }
        }
        out[idx] = acc;
    }
}

// Block-wide sum in double; every thread gets the total.  blockDim.x must be a power of two <= 1024.
__device__ double block_sum(double s) {
    __shared__ double buf[1024];
    buf[threadIdx.x] = s;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) buf[threadIdx.x] += buf[threadIdx.x + half];
        __syncthreads();
    }
    double total = buf[0];
    __syncthreads();
    return total;
}

// Weight gradient of corr2d_fwd summed over the batch: x (N, Ci, H, W), g (N, Co, Ho, Wo) -> out (Co, Ci, kh, kw).
// One block per weight, the block's threads stride over (n, y, x) and reduce in double.
template <typename T>
__global__ void corr2d_wgrad(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ out,
                             int n_b, int ci_n, int h, int wd, int co_n, int kh, int kw, int ho, int wo) {
    int widx = blockIdx.x;  // (o, c, u, v)
    int v = widx % kw;
    int u = (widx / kw) % kh;
    int c = (widx / (kw * kh)) % ci_n;
    int o = widx / (kw * kh * ci_n);
    i64 per = (i64)ho * wo;
    i64 total = (i64)n_b * per;
    double s = 0.0;
    for (i64 i = threadIdx.x; i < total; i += blockDim.x) {
        i64 n = i / per;
        int rem = i % per;
        int y = rem / wo, xx = rem % wo;
        s += (double)g[(n * co_n + o) * per + rem] * (double)x[((n * ci_n + c) * h + y + u) * (i64)wd + xx + v];
    }
    s = block_sum(s);
    if (threadIdx.x == 0) out[widx] = (T)s;
}

// ---------------------------------------------------------------- layer 1 (movies)
// x (T, H, W), w (C, K, kh, kw) -> out (N = T-K+1, C, Ho, Wo).
template <typename T>
__global__ void corr3d_movie_fwd(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ out,
                                 int t_n, int h, int wd, int c_n, int k_n, int kh, int kw, int ho, int wo) {
    i64 n_win = t_n - k_n + 1;
    i64 total = n_win * c_n * ho * wo;
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        int xx = idx % wo;
        int y = (idx / wo) % ho;
        int c = (idx / ((i64)wo * ho)) % c_n;
        i64 n = idx / ((i64)wo * ho * c_n);
        T acc = 0;
        for (int tau = 0; tau < k_n; ++tau) {
            const T* xp = x + ((n + tau) * h + y) * (i64)wd + xx;
            const T* wp = w + ((i64)c * k_n + tau) * kh * kw;
            for (int u = 0; u < kh; ++u)
                for (int v = 0; v < kw; ++v)
                    acc += wp[u * kw + v] * xp[(i64)u * wd + v];
        }
        out[idx] = acc;
    }
}

// Adjoint: g (N, C, Ho, Wo), w (C, K, kh, kw) -> out (N+K-1, H, W); one thread per movie pixel.
template <typename T>
__global__ void corr3d_movie_t(const T* __restrict__ g, const T* __restrict__ w, T* __restrict__ out,
                               int n_win, int c_n, int k_n, int kh, int kw, int ho, int wo, int h, int wd) {
    i64 t_n = (i64)n_win + k_n - 1;
    i64 total = t_n * h * wd;
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        int xx = idx % wd;
        int y = (idx / wd) % h;
        i64 t = idx / ((i64)wd * h);
        T acc = 0;
        for (int tau = 0; tau < k_n; ++tau) {
            i64 n = t - tau;
            if (n < 0 || n >= n_win) continue;
            for (int c = 0; c < c_n; ++c) {
                const T* gp = g + (n * c_n + c) * (i64)ho * wo;
                const T* wp = w + ((i64)c * k_n + tau) * kh * kw;
                for (int u = 0; u < kh; ++u) {
                    int yo = y - u;
                    if (yo < 0 || yo >= ho) continue;
                    for (int v = 0; v < kw; ++v) {
                        int xo = xx - v;
                        if (xo < 0 || xo >= wo) continue;
                        acc += wp[u * kw + v] * gp[(i64)yo * wo + xo];
                    }
                }
            }
        }
        out[idx] = acc;
    }
}

// Weight gradient summed over windows: x (T, H, W), g (N, C, Ho, Wo) -> out (C, K, kh, kw); one block per weight.
template <typename T>
__global__ void corr3d_movie_wgrad(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ out,
                                   int n_win, int c_n, int k_n, int kh, int kw, int ho, int wo, int h, int wd) {
    int widx = blockIdx.x;  // (c, tau, u, v)
    int v = widx % kw;
    int u = (widx / kw) % kh;
    int tau = (widx / (kw * kh)) % k_n;
    int c = widx / (kw * kh * k_n);
    i64 per = (i64)ho * wo;
    i64 total = (i64)n_win * per;
    double s = 0.0;
    for (i64 i = threadIdx.x; i < total; i += blockDim.x) {
        i64 n = i / per;
        int rem = i % per;
        int y = rem / wo, xx = rem % wo;
        s += (double)g[(n * c_n + c) * per + rem] * (double)x[((n + tau) * h + y + u) * (i64)wd + xx + v];
    }
    s = block_sum(s);
    if (threadIdx.x == 0) out[widx] = (T)s;
}

#ifdef RETINA_INSTANTIATE
// Explicit instantiations for a stand-alone nvcc syntax check (.ci/run); CuPy instantiates by name.
#define INST(T)                                                                                            \
    template __global__ void corr2d_fwd<T>(const T*, const T*, T*, int, int, int, int, int, int, int, int, int); \
    template __global__ void corr2d_t<T>(const T*, const T*, T*, int, int, int, int, int, int, int, int, int);   \
    template __global__ void corr2d_wgrad<T>(const T*, const T*, T*, int, int, int, int, int, int, int, int, int); \
    template __global__ void corr3d_movie_fwd<T>(const T*, const T*, T*, int, int, int, int, int, int, int, int, int); \
    template __global__ void corr3d_movie_t<T>(const T*, const T*, T*, int, int, int, int, int, int, int, int, int); \
    template __global__ void corr3d_movie_wgrad<T>(const T*, const T*, T*, int, int, int, int, int, int, int, int, int);
INST(float)
INST(double)
#endif

// The in-silico retina's hot loops on the GPU (twins of bipolar_block / ganglion_block in
// retina/kernels/cpu.py; see their docstrings for the model).  Time is sequential, so each
// thread owns one state variable chain and loops over the block's frames; the parallelism is
// over pixels x pathways (bipolar) and cells (ganglion).  State arrays are updated in place.

typedef long long i64;

template <typename T>
__global__ void bipolar_block(const T* __restrict__ s, const T* __restrict__ drive, const T* __restrict__ decay,
                              const long long* __restrict__ n_stages, const T* __restrict__ a2,
                              const T* __restrict__ theta, const T* __restrict__ rec, const T* __restrict__ use,
                              T* __restrict__ cascade, T* __restrict__ pool, T* __restrict__ out,
                              int t_len, int n_px, int n_k, int max_stages) {
    // s (T, P); decay (K, 2); cascade (K, 2, S, P); pool (K, P); out (T, K, P)
    i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x;
    if (idx >= (i64)n_px * n_k) return;
    int p = idx % n_px;
    int k = idx / n_px;
    T e1 = decay[2 * k], e2 = decay[2 * k + 1];
    int ns = (int)n_stages[k];
    T* c1 = cascade + ((i64)(k * 2 + 0) * max_stages) * n_px + p;
    T* c2 = cascade + ((i64)(k * 2 + 1) * max_stages) * n_px + p;
    T r_pool = pool[(i64)k * n_px + p];
    for (int t = 0; t < t_len; ++t) {
        T x1 = s[(i64)t * n_px + p];
        T x2 = x1;
        for (int i = 0; i < ns; ++i) {
            T y1 = e1 * c1[(i64)i * n_px] + (1 - e1) * x1;
            T y2 = e2 * c2[(i64)i * n_px] + (1 - e2) * x2;
            c1[(i64)i * n_px] = y1;
            c2[(i64)i * n_px] = y2;
            x1 = y1;
            x2 = y2;
        }
        T v = drive[k] * (x1 - a2[k] * x2) - theta[k];
        T n = v > 0 ? v : 0;
        T r = 1 - (1 - r_pool) * rec[k];
        out[((i64)t * n_k + k) * n_px + p] = n * r;
        r_pool = r * exp(-use[k] * n);
    }
    pool[(i64)k * n_px + p] = r_pool;
}

template <typename T>
__device__ T softplus_(T x) {
    return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
}

template <typename T>
__global__ void ganglion_block(const T* __restrict__ exc, const T* __restrict__ inh, const T* __restrict__ w,
                               const T* __restrict__ w_inh, const T* __restrict__ theta, const T* __restrict__ r_max,
                               T beta, T e_inh, T e_mem, T rec_inh, T use_inh, T theta_inh, T gc_gain, T e_gc,
                               T* __restrict__ state_inh, T* __restrict__ state_dep, T* __restrict__ state_u,
                               T* __restrict__ state_gc, T* __restrict__ rates, T* __restrict__ parts,
                               int t_len, int n_k, int n_j) {
    // exc (T, K, J); inh (T, J); w (J, K); state_u (K + 1, J); rates (T, J); parts (T, K + 1, J)
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n_j) return;
    for (int t = 0; t < t_len; ++t) {
        T a = e_inh * state_inh[j] + (1 - e_inh) * inh[(i64)t * n_j + j];
        state_inh[j] = a;
        T ap = a > theta_inh ? a - theta_inh : 0;
        T nr = 1 - (1 - state_dep[j]) * rec_inh;
        T amacrine = ap * nr;
        state_dep[j] = nr * exp(-use_inh * ap);
        T u = 0;
        for (int k = 0; k < n_k; ++k) {
            T uk = e_mem * state_u[(i64)k * n_j + j] + (1 - e_mem) * w[(i64)j * n_k + k] * exc[((i64)t * n_k + k) * n_j + j];
            state_u[(i64)k * n_j + j] = uk;
            parts[((i64)t * (n_k + 1) + k) * n_j + j] = uk;
            u += uk;
        }
        T ua = e_mem * state_u[(i64)n_k * n_j + j] - (1 - e_mem) * w_inh[j] * amacrine;
        state_u[(i64)n_k * n_j + j] = ua;
        parts[((i64)t * (n_k + 1) + n_k) * n_j + j] = ua;
        u += ua;
        T r = r_max[j] * softplus_(beta * (u - theta[j])) / beta;
        if (gc_gain > 0) {
            T g = state_gc[j];
            r = r / (1 + g * g * g * g);
            state_gc[j] = e_gc * g + (1 - e_gc) * gc_gain * r;
        }
        rates[(i64)t * n_j + j] = r;
    }
}

#ifdef RETINA_INSTANTIATE
#define INST(T)                                                                                             \
    template __global__ void bipolar_block<T>(const T*, const T*, const T*, const long long*, const T*,    \
                                              const T*, const T*, const T*, T*, T*, T*, int, int, int, int); \
    template __global__ void ganglion_block<T>(const T*, const T*, const T*, const T*, const T*, const T*, \
                                               T, T, T, T, T, T, T, T, T*, T*, T*, T*, T*, T*, int, int, int);
INST(float)
INST(double)
#endif

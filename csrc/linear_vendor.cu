// Dense f16/bf16 linears at large m through the vendor GEMM (cuBLASLt), which a user of a dense
// GEMM expects there. The library is loaded at run time (dlopen), so nothing is added at link
// time and a machine without it runs paradec's own GEMM instead: libcublasLt.so.13 from the
// loader's search path, else from $CUDA_HOME/lib64 or /usr/local/cuda/lib64, or the file
// PARADEC_CUBLASLT names; PARADEC_CUBLASLT=off never loads it.
//
// out[m, n] (+)= x[m, k] · w[n, k]ᵀ + bias is, in cuBLAS's column-major terms,
// D (n × m, ld n) = op(A) · B with A = w seen as k × n (ld k, transposed) and B = x seen as
// k × m (ld k); the bias is one value per row of D (the bias epilogue), accumulation is
// beta = 1 with C = D. f32 accumulation (CUBLAS_COMPUTE_32F). No workspace, so a call needs no
// allocation and can be captured in a CUDA graph. The algorithm for a shape (and the pointers'
// alignments) is chosen once by the library's heuristic and cached. Built without the cuBLASLt
// headers, the file compiles to a stub that never loads it.
#if __has_include(<cublasLt.h>)
#include <cublasLt.h>
#define PARADEC_HAVE_CUBLASLT 1
#else
#define PARADEC_HAVE_CUBLASLT 0  // built without the cuBLASLt headers: paradec's GEMM only
#endif
#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "common.cuh"
#include "linear_vendor.cuh"

#if PARADEC_HAVE_CUBLASLT
namespace paradec {
namespace {

struct Lt {
    void *lib = nullptr;
    decltype(&cublasLtCreate) create = nullptr;
    decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
    decltype(&cublasLtMatmulDescDestroy) desc_destroy = nullptr;
    decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
    decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
    decltype(&cublasLtMatrixLayoutDestroy) layout_destroy = nullptr;
    decltype(&cublasLtMatmulPreferenceCreate) pref_create = nullptr;
    decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy = nullptr;
    decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set = nullptr;
    decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
    decltype(&cublasLtMatmul) matmul = nullptr;
    cublasLtHandle_t handle = nullptr;
};

void *open_library() {
    const char *env = std::getenv("PARADEC_CUBLASLT");
    if (env && std::strcmp(env, "off") == 0) return nullptr;
    if (env && *env) return dlopen(env, RTLD_NOW | RTLD_LOCAL);
    const char *name = "libcublasLt.so.13";
    if (void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL)) return h;
    if (const char *home = std::getenv("CUDA_HOME")) {
        const std::string p = std::string(home) + "/lib64/" + name;
        if (void *h = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
    }
    return dlopen((std::string("/usr/local/cuda/lib64/") + name).c_str(), RTLD_NOW | RTLD_LOCAL);
}

template <typename F>
bool resolve(void *lib, const char *name, F &out) {
    out = reinterpret_cast<F>(dlsym(lib, name));
    return out != nullptr;
}

// The loaded library, or null where it is absent, turned off or fails to start.
const Lt *library() {
    static Lt lt;
    static const Lt *ready = nullptr;
    static std::once_flag once;
    std::call_once(once, [] {
        void *lib = open_library();
        if (!lib) return;
        Lt l;
        l.lib = lib;
        const bool ok = resolve(lib, "cublasLtCreate", l.create) &&
                        resolve(lib, "cublasLtMatmulDescCreate", l.desc_create) &&
                        resolve(lib, "cublasLtMatmulDescDestroy", l.desc_destroy) &&
                        resolve(lib, "cublasLtMatmulDescSetAttribute", l.desc_set) &&
                        resolve(lib, "cublasLtMatrixLayoutCreate", l.layout_create) &&
                        resolve(lib, "cublasLtMatrixLayoutDestroy", l.layout_destroy) &&
                        resolve(lib, "cublasLtMatmulPreferenceCreate", l.pref_create) &&
                        resolve(lib, "cublasLtMatmulPreferenceDestroy", l.pref_destroy) &&
                        resolve(lib, "cublasLtMatmulPreferenceSetAttribute", l.pref_set) &&
                        resolve(lib, "cublasLtMatmulAlgoGetHeuristic", l.heuristic) &&
                        resolve(lib, "cublasLtMatmul", l.matmul);
        if (!ok || l.create(&l.handle) != CUBLAS_STATUS_SUCCESS) {
            dlclose(lib);
            return;
        }
        lt = l;
        ready = &lt;
    });
    return ready;
}

// The largest power of two (≤ 256) dividing a pointer: the alignment the heuristic may assume.
uint32_t alignment(const void *p) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    uint32_t al = 256;
    while (al > 1 && (a % al) != 0) al >>= 1;
    return al;
}

// Descriptors of one call, destroyed with it.
struct Call {
    const Lt *lt;
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    ~Call() {
        if (pref) lt->pref_destroy(pref);
        if (d) lt->layout_destroy(d);
        if (b) lt->layout_destroy(b);
        if (a) lt->layout_destroy(a);
        if (desc) lt->desc_destroy(desc);
    }
};

using AlgoKey = std::tuple<int, size_t, size_t, size_t, bool, bool, uint32_t, uint32_t, uint32_t,
                           uint32_t, int>;

std::mutex &algo_mutex() {
    static std::mutex m;
    return m;
}
std::map<AlgoKey, cublasLtMatmulAlgo_t> &algo_cache() {
    static std::map<AlgoKey, cublasLtMatmulAlgo_t> c;
    return c;
}

}  // namespace

bool vendor_gemm_available() { return library() != nullptr; }

int vendor_gemm(int dtype, const void *x, size_t m, size_t k, const void *w, size_t n,
                const void *bias, void *out, bool accumulate, cudaStream_t stream, bool *ran) {
    *ran = false;
    const Lt *lt = library();
    if (!lt) return PARADEC_K_OK;
    const cudaDataType_t type = dtype == PARADEC_F16 ? CUDA_R_16F : CUDA_R_16BF;
    Call c{lt};
    if (lt->desc_create(&c.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS)
        return PARADEC_K_OK;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const cublasLtEpilogue_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    if (lt->desc_set(c.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) != CUBLAS_STATUS_SUCCESS ||
        lt->desc_set(c.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) != CUBLAS_STATUS_SUCCESS ||
        lt->desc_set(c.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) != CUBLAS_STATUS_SUCCESS)
        return PARADEC_K_OK;
    if (bias && lt->desc_set(c.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias) !=
                    CUBLAS_STATUS_SUCCESS)
        return PARADEC_K_OK;
    const auto u64 = [](size_t v) { return static_cast<uint64_t>(v); };
    const auto i64 = [](size_t v) { return static_cast<int64_t>(v); };
    if (lt->layout_create(&c.a, type, u64(k), u64(n), i64(k)) != CUBLAS_STATUS_SUCCESS ||
        lt->layout_create(&c.b, type, u64(k), u64(m), i64(k)) != CUBLAS_STATUS_SUCCESS ||
        lt->layout_create(&c.d, type, u64(n), u64(m), i64(n)) != CUBLAS_STATUS_SUCCESS)
        return PARADEC_K_OK;
    const uint32_t al_a = alignment(w), al_b = alignment(x), al_d = alignment(out),
                   al_bias = bias ? alignment(bias) : 256;
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) {
        cudaGetLastError();
        return PARADEC_K_OK;
    }
    const AlgoKey key{dtype, m, n, k, bias != nullptr, accumulate, al_a, al_b, al_d, al_bias, device};
    cublasLtMatmulAlgo_t algo;
    bool have = false;
    {
        std::lock_guard<std::mutex> g(algo_mutex());
        auto it = algo_cache().find(key);
        if (it != algo_cache().end()) {
            algo = it->second;
            have = true;
        }
    }
    if (!have) {
        if (lt->pref_create(&c.pref) != CUBLAS_STATUS_SUCCESS) return PARADEC_K_OK;
        const uint64_t no_workspace = 0;
        if (lt->pref_set(c.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &no_workspace,
                         sizeof no_workspace) != CUBLAS_STATUS_SUCCESS ||
            lt->pref_set(c.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a) !=
                CUBLAS_STATUS_SUCCESS ||
            lt->pref_set(c.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b) !=
                CUBLAS_STATUS_SUCCESS ||
            lt->pref_set(c.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof al_d) !=
                CUBLAS_STATUS_SUCCESS ||
            lt->pref_set(c.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof al_d) !=
                CUBLAS_STATUS_SUCCESS)
            return PARADEC_K_OK;
        cublasLtMatmulHeuristicResult_t res{};
        int found = 0;
        if (lt->heuristic(lt->handle, c.desc, c.a, c.b, c.d, c.d, c.pref, 1, &res, &found) !=
                CUBLAS_STATUS_SUCCESS ||
            found < 1 || res.state != CUBLAS_STATUS_SUCCESS)
            return PARADEC_K_OK;  // no algorithm: paradec's GEMM runs instead
        algo = res.algo;
        std::lock_guard<std::mutex> g(algo_mutex());
        algo_cache().emplace(key, algo);
    }
    const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
    const cublasStatus_t st = lt->matmul(lt->handle, c.desc, &alpha, w, c.a, x, c.b, &beta, out,
                                         c.d, out, c.d, &algo, nullptr, 0, stream);
    if (st != CUBLAS_STATUS_SUCCESS) {
        // A CUDA error left behind is this call's; a refusal of the library (checked before
        // it launches anything) leaves the call to paradec's GEMM.
        const cudaError_t e = cudaGetLastError();
        return e != cudaSuccess ? static_cast<int>(e) : PARADEC_K_OK;
    }
    *ran = true;
    return PARADEC_K_OK;
}

}  // namespace paradec
#else
namespace paradec {

bool vendor_gemm_available() { return false; }

int vendor_gemm(int, const void *, size_t, size_t, const void *, size_t, const void *, void *,
                bool, cudaStream_t, bool *ran) {
    *ran = false;
    return PARADEC_K_OK;
}

}  // namespace paradec
#endif


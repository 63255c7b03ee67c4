// Thread-block clusters (sm_90 and later): the cluster-wide barrier and reads of another block's
// shared memory. Below sm_90 they compile to nothing (callers launch clusters only on sm_90+).
#pragma once

#include <cstdint>

namespace paradec {

// Every thread of every block of the cluster arrives and waits (release / acquire): what each
// block wrote to its shared memory before it is visible to the others after it.
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::
                     : "memory");
#endif
}

// The cluster address of shared address `addr` in the cluster's block of rank `rank`.
__device__ __forceinline__ uint32_t cluster_map(uint32_t addr, uint32_t rank) {
    uint32_t remote = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(addr), "r"(rank));
#endif
    return remote;
}

// The f32 at shared address `addr` of the cluster's block of rank `rank`.
__device__ __forceinline__ float ld_cluster_f32(uint32_t addr, uint32_t rank) {
    float v = 0.f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("ld.shared::cluster.f32 %0, [%1];\n"
                 : "=f"(v)
                 : "r"(cluster_map(addr, rank))
                 : "memory");
#endif
    return v;
}

}  // namespace paradec

// Hopper's bulk-copy engine (TMA, sm_90a): copies from global to shared memory that run
// without the warps — a 2-D tile through a tensor map (which also lays the tile out in the
// 128-byte swizzle that wgmma reads, and zero-fills rows past the tensor's end), and plain
// contiguous runs of bytes — each completing on a shared-memory barrier (mbarrier) that counts
// the bytes it expects. One thread issues a stage's copies; the threads that read the stage
// wait for its barrier's phase to flip.
//
// The rules the callers keep:
//  - a barrier is initialised by one thread, then fence_barrier_init() and a block barrier
//    (a cluster barrier where other blocks copy or arrive into it) before any thread uses it;
//  - expect_bytes() is called for a phase before (or while) its copies land, with their total;
//  - a copy's source and destination are 16-byte aligned and its size a multiple of 16; a tile
//    in the 128-byte swizzle starts on a 1024-byte boundary;
//  - shared memory read by the threads after barrier_wait() of a phase may be overwritten by the
//    next copies only after every reader has arrived on the barrier that releases it.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "cluster.cuh"
#include "wgmma.cuh"

namespace paradec {

__device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Initialises the barrier for `count` arrivals per phase.
__device__ __forceinline__ void barrier_init(uint64_t *bar, uint32_t count) {
#if PARADEC_WGMMA_ARCH
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count)
                 : "memory");
#endif
}

// Makes barrier initialisations visible to the bulk-copy engine (before the block barrier).
__device__ __forceinline__ void fence_barrier_init() {
#if PARADEC_WGMMA_ARCH
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

// One arrival that also tells the barrier to expect `bytes` more from copies this phase.
__device__ __forceinline__ void expect_bytes(uint64_t *bar, uint32_t bytes) {
#if PARADEC_WGMMA_ARCH
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)),
                 "r"(bytes)
                 : "memory");
#endif
}

// Waits until the barrier's phase of parity `parity` (0 for its first phase, 1 for the second,
// …) has completed: all its arrivals made and all its expected bytes landed.
__device__ __forceinline__ void barrier_wait(uint64_t *bar, uint32_t parity) {
#if PARADEC_WGMMA_ARCH
    uint32_t done = 0;
    do {
        asm volatile(
            "{\n.reg .pred p;\n"
            "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
            "selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(smem_addr(bar)), "r"(parity)
            : "memory");
    } while (!done);
#endif
}

// Copies the tensor map's box at (c0 along its inner dimension, c1 along its outer one) into
// the same offset `dst` of the shared memory of every block of the cluster in cta_mask (bit i:
// the block of rank i), completing on each one's barrier at bar's offset (the box's full size
// in bytes, rows past the tensor zero-filled and counted too).
__device__ __forceinline__ void tile_copy_2d_multicast(void *dst, const CUtensorMap *map, int c0,
                                                       int c1, uint64_t *bar, uint16_t cta_mask) {
#if PARADEC_WGMMA_ARCH
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
        ".multicast::cluster [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(smem_addr(bar)), "h"(cta_mask)
        : "memory");
#endif
}

// Copies the 3-D tensor map's box at (c0, c1, c2), innermost first, into this block's shared
// memory at dst, completing on bar (the box's full size in bytes, zero-filled past the tensor).
__device__ __forceinline__ void tile_copy_3d(void *dst, const CUtensorMap *map, int c0, int c1,
                                             int c2, uint64_t *bar) {
#if PARADEC_WGMMA_ARCH
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
        : "memory");
#endif
}

// One arrival on a barrier of this block (release at block scope).
__device__ __forceinline__ void barrier_arrive(uint64_t *bar) {
#if PARADEC_WGMMA_ARCH
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
#endif
}

// This block's rank in its cluster.
__device__ __forceinline__ uint32_t cluster_rank() {
    uint32_t r = 0;
#if PARADEC_WGMMA_ARCH
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
#endif
    return r;
}

// One arrival on the barrier at bar's offset in the shared memory of the cluster's block of
// rank `rank` (the default release at block scope: it releases shared memory the arriving
// thread has done reading, which needs no wider ordering).
__device__ __forceinline__ void barrier_arrive_cluster(uint64_t *bar, uint32_t rank) {
#if PARADEC_WGMMA_ARCH
    asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];\n" ::"r"(
                     cluster_map(smem_addr(bar), rank))
                 : "memory");
#endif
}

// Copies `bytes` contiguous bytes from global src to shared dst; completes on bar.
__device__ __forceinline__ void bulk_copy(void *dst, const void *src, uint32_t bytes,
                                          uint64_t *bar) {
#if PARADEC_WGMMA_ARCH
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::
            "r"(smem_addr(dst)),
        "l"(src), "r"(bytes), "r"(smem_addr(bar))
        : "memory");
#endif
}

// Waits at named barrier `id` (1…15; 0 is __syncthreads') for `threads` threads of the block.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Arrives at named barrier `id` without waiting (the threads that sync on it count these).
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// A tensor map of a row-major 16-bit matrix [rows, cols] with `stride` elements between rows,
// read in boxes of box_rows × box_cols (box_cols · 2 = 128 bytes) laid out in shared memory in
// the 128-byte swizzle; rows past `rows` read as zeros. Encoded by the driver, whose entry point
// is looked up once. Returns cudaSuccess, or the reason the map could not be made (an old
// driver, or arguments the engine does not take: a base not 16-byte aligned, a stride not a
// multiple of 16 bytes).
cudaError_t make_swizzled_tile_map(CUtensorMap *map, bool bf16, const void *base, uint64_t rows,
                                   uint64_t cols, uint64_t stride, uint32_t box_rows,
                                   uint32_t box_cols);

// A tensor map of 16-bit heads laid out [rows, heads, head_dim] (as a KV cache's [batch ·
// capacity, kv_heads, head_dim] or the queries' [batch · q_len, heads, head_dim]), read in boxes
// of box_rows rows × 1 head × 64 elements (128 bytes) laid out in shared memory in the 128-byte
// swizzle — box coordinates (element, head, row); rows past `rows` read as zeros. Returns
// cudaSuccess or, as make_swizzled_tile_map, the reason there is none.
cudaError_t make_head_tile_map(CUtensorMap *map, bool bf16, const void *base, uint64_t rows,
                               uint64_t heads, uint64_t head_dim, uint32_t box_rows);

}  // namespace paradec

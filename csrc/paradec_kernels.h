/*
 * paradec_kernels.h — the plain-C launcher API of paradec's CUDA kernels.
 *
 * Every launcher:
 *   - takes device pointers, sizes and the caller's stream (NULL = the legacy default stream;
 *     paradec_stream_t is the same type as cudaStream_t), and launches on the current device;
 *   - checks its arguments before launching and returns a negative PARADEC_K_* code for a bad
 *     one (these numbers never change meaning);
 *   - returns a positive cudaError_t when the launch itself fails (from cudaGetLastError, which
 *     this also clears), 0 on success;
 *   - never throws, never synchronizes, never allocates.
 * Float tensors are fp16 or bf16 (PARADEC_F16 / PARADEC_BF16), all of one dtype per call;
 * arithmetic is in f32. Tensors are dense and row-major. An output may alias its input only
 * where a launcher says so.
 *
 * The declarations live in one header per kernel family under kernels/ (common, norm, rope,
 * activation, embedding, linear, attention); this file includes them all. Rust reads it through
 * bindgen (build.rs): change a header and both sides follow.
 */
#ifndef PARADEC_KERNELS_H
#define PARADEC_KERNELS_H

#include "kernels/common.h"
#include "kernels/norm.h"
#include "kernels/rope.h"
#include "kernels/activation.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "kernels/attention.h"
#include "kernels/kv_quant.h"

#endif /* PARADEC_KERNELS_H */

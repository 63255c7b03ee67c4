/* kernels/norm.h — LayerNorm / RMSNorm launchers, with fused residual add and the two-output form.
 * Included by paradec_kernels.h. */
#ifndef PARADEC_KERNELS_NORM_H
#define PARADEC_KERNELS_NORM_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- norms ------------------------------------------------------------------------------------
 * x, out: [rows, cols]; weight, bias: [cols] or NULL (no scale / no shift).
 * LayerNorm: (x − mean)/√(var + eps)·w + b;  RMSNorm: x/√(mean(x²) + eps)·w (+ b).
 * cols ≤ PARADEC_NORM_MAX_COLS. out may alias x. */
int paradec_norm(int kind, int dtype, const void *x, const void *weight, const void *bias,
                 void *out, size_t rows, size_t cols, float eps, paradec_stream_t stream);

/* x += residual (rounded to the dtype and written back to x); out = norm(x). */
int paradec_add_norm(int kind, int dtype, void *x, const void *residual, const void *weight,
                     const void *bias, void *out, size_t rows, size_t cols, float eps,
                     paradec_stream_t stream);

/* Two norms of the same rows from one read of x: out_a with (weight_a, bias_a), out_b with
 * (weight_b, bias_b). */
int paradec_norm2(int kind, int dtype, const void *x, const void *weight_a, const void *bias_a,
                  const void *weight_b, const void *bias_b, void *out_a, void *out_b, size_t rows,
                  size_t cols, float eps, paradec_stream_t stream);

/* The general form of the three above: residual (NULL: none) is added to x first, and out_b
 * (NULL: none) receives a second norm with (weight_b, bias_b). */
int paradec_norm_fused(int kind, int dtype, void *x, const void *residual, const void *weight_a,
                       const void *bias_a, void *out_a, const void *weight_b, const void *bias_b,
                       void *out_b, size_t rows, size_t cols, float eps, paradec_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* PARADEC_KERNELS_NORM_H */

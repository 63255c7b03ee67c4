/* kernels/linear.h — dense and quantized (GPTQ, EXL2) matrix multiplication.
 * Included by paradec_kernels.h. */
#ifndef PARADEC_KERNELS_LINEAR_H
#define PARADEC_KERNELS_LINEAR_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* (launchers land with the GPU linear work) */

#ifdef __cplusplus
}
#endif

#endif /* PARADEC_KERNELS_LINEAR_H */

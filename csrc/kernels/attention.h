/* kernels/attention.h — QKV split, q/k norms and attention over the KV cache.
 * Included by paradec_kernels.h. */
#ifndef PARADEC_KERNELS_ATTENTION_H
#define PARADEC_KERNELS_ATTENTION_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* (launchers land with the GPU attention work) */

#ifdef __cplusplus
}
#endif

#endif /* PARADEC_KERNELS_ATTENTION_H */

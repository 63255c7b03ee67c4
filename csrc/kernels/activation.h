/* kernels/activation.h — activations, the gated multiply and the in-place add.
 * Included by paradec_kernels.h. */
#ifndef PARADEC_KERNELS_ACTIVATION_H
#define PARADEC_KERNELS_ACTIVATION_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- elementwise -------------------------------------------------------------------------------- */
/* x = act(x) over n elements. */
int paradec_activate(int act, int dtype, void *x, size_t n, paradec_stream_t stream);
/* out = act(gate)·up over n elements; out may alias gate or up. */
int paradec_act_mul(int act, int dtype, const void *gate, const void *up, void *out, size_t n,
                    paradec_stream_t stream);
/* x += y over n elements. */
int paradec_add_inplace(int dtype, void *x, const void *y, size_t n, paradec_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* PARADEC_KERNELS_ACTIVATION_H */

/* kernels/embedding.h — the token-embedding gather.
 * Included by paradec_kernels.h. */
#ifndef PARADEC_KERNELS_EMBEDDING_H
#define PARADEC_KERNELS_EMBEDDING_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- embedding -----------------------------------------------------------------------------------
 * out[t] = table[ids[t]]; table: [vocab, hidden], ids: n_ids device values of id_type, out:
 * [n_ids, hidden]. An id outside [0, vocab) yields a row of zeros (never a read out of bounds);
 * callers whose ids come from the host should check them there and report the bad one. */
int paradec_embedding(int dtype, const void *table, size_t vocab, size_t hidden, const void *ids,
                      int id_type, size_t n_ids, void *out, paradec_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* PARADEC_KERNELS_EMBEDDING_H */

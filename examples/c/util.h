/*
 * util.h — small helpers shared by the C examples: descriptors for host and device memory,
 * and a CHECK macro that prints the status and paradec_last_error() on failure.
 */
#ifndef PARADEC_EXAMPLE_UTIL_H
#define PARADEC_EXAMPLE_UTIL_H

#include <stdio.h>
#include <stdlib.h>

#include "paradec.h"

static const paradec_dtype PD_F32 = {PARADEC_DTYPE_FLOAT, 32, 1};
static const paradec_dtype PD_F16 = {PARADEC_DTYPE_FLOAT, 16, 1};
static const paradec_dtype PD_I32 = {PARADEC_DTYPE_INT, 32, 1};
static const paradec_dtype PD_U8 = {PARADEC_DTYPE_UINT, 8, 1};
static const paradec_dtype PD_I64 = {PARADEC_DTYPE_INT, 64, 1};
static const paradec_device PD_CPU = {PARADEC_DEVICE_CPU, 0};

/* A descriptor of caller memory: compact row-major (strides NULL), no offset. */
static inline paradec_tensor pd_tensor(void *data, paradec_device dev, paradec_dtype dt,
                                       int32_t ndim, int64_t *shape) {
    paradec_tensor t;
    t.data = data;
    t.device = dev;
    t.ndim = ndim;
    t.dtype = dt;
    t.shape = shape;
    t.strides = NULL;
    t.byte_offset = 0;
    return t;
}

static inline paradec_tensor pd_host(void *data, paradec_dtype dt, int32_t ndim, int64_t *shape) {
    return pd_tensor(data, PD_CPU, dt, ndim, shape);
}

/* Runs a paradec call; on failure prints where, the status and the message, and exits. */
#define CHECK(call)                                                                         \
    do {                                                                                    \
        paradec_status st_ = (call);                                                        \
        if (st_ != PARADEC_OK) {                                                            \
            fprintf(stderr, "%s:%d: %s -> %d (%s): %s\n", __FILE__, __LINE__, #call, (int)st_, \
                    paradec_status_str((int)st_), paradec_last_error());                    \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

#endif

// PARADEC_HOST_DEVICE: marks plain C++ that the kernels call and the host checks
// (csrc/host_checks) run on the CPU.
#pragma once

#if defined(__CUDACC__)
#define PARADEC_HOST_DEVICE __host__ __device__
#else
#define PARADEC_HOST_DEVICE
#endif

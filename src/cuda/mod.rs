//! CUDA backend (feature `cuda`): safe wrappers over the CUDA runtime and the kernel launchers.
//!
//! Layers, from the bottom: [`ffi`] (bindgen's declarations of `csrc/paradec_kernels.h` and
//! of the runtime calls used), [`error`] (CUDA codes → [`crate::Error`]), RAII types
//! ([`CudaStream`], [`DeviceBuffer`], [`PinnedBuffer`], [`CudaEvent`], [`CudaGraph`]), device queries
//! ([`device`]), and [`kernels`]: safe launchers over device tensors, each the twin of a
//! `cpu::` function with the same arguments. The CUDA runtime is linked statically; a machine
//! without a driver or device gets `Error::NoDevice`.

pub mod buffer;
pub mod device;
pub mod error;
pub mod event;
pub mod ffi;
pub mod graph;
pub mod kernels;
pub mod pinned;
pub mod stream;

pub use buffer::DeviceBuffer;
pub use device::{device_count, is_available, properties, DeviceProperties};
pub use event::CudaEvent;
pub use graph::CudaGraph;
pub use pinned::PinnedBuffer;
pub use stream::CudaStream;

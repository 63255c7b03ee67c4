//! `Stream`: where an op runs. Host ops run immediately on the calling thread; CUDA ops are
//! queued on the caller's CUDA stream and never synchronize.

/// The execution context an op is queued on.
#[derive(Debug, Default)]
pub enum Stream {
    /// Run on the calling thread (the CPU reference backend).
    #[default]
    Host,
    /// A CUDA stream (owned or borrowed from the caller).
    #[cfg(feature = "cuda")]
    Cuda(crate::cuda::CudaStream),
}

impl Stream {
    /// The host stream (the CPU reference).
    pub fn host() -> Self {
        Stream::Host
    }
}

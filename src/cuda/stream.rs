//! `CudaStream`: a CUDA stream, owned (created here, destroyed on drop) or borrowed from a raw
//! handle (a C caller's `cudaStream_t`, never destroyed here).

use std::fmt;
use std::ptr;

use super::device::ensure_device;
use super::error::check;
use super::ffi;
use crate::Result;

/// A CUDA stream on one device.
pub struct CudaStream {
    raw: ffi::cudaStream_t,
    device: usize,
    owned: bool,
}

// SAFETY: a cudaStream_t is an opaque handle that the CUDA runtime lets any host thread use;
// the runtime API is thread-safe. paradec never dereferences it.
unsafe impl Send for CudaStream {}
// SAFETY: as above; every method takes `&self` and only passes the handle to the runtime.
unsafe impl Sync for CudaStream {}

impl CudaStream {
    /// A new stream on `device` that does not synchronize with the legacy default stream.
    pub fn new(device: usize) -> Result<Self> {
        ensure_device(device)?;
        let mut raw: ffi::cudaStream_t = ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer; flag 1 is cudaStreamNonBlocking.
        check(
            unsafe { ffi::cudaStreamCreateWithFlags(&mut raw, 1) },
            "cudaStreamCreateWithFlags",
        )?;
        Ok(CudaStream {
            raw,
            device,
            owned: true,
        })
    }

    /// Borrows a stream created elsewhere (e.g. a C caller's); it is not destroyed on drop.
    ///
    /// # Safety
    /// `raw` must be NULL (the legacy default stream) or a live stream of device `device`, and
    /// must stay alive for as long as this value (and any work queued through it) is used.
    pub unsafe fn from_raw(raw: ffi::cudaStream_t, device: usize) -> Self {
        CudaStream {
            raw,
            device,
            owned: false,
        }
    }

    /// The legacy default stream (NULL handle) of `device`.
    pub fn legacy_default(device: usize) -> Self {
        CudaStream {
            raw: ptr::null_mut(),
            device,
            owned: false,
        }
    }

    /// The raw handle, for passing to CUDA or C code.
    pub fn raw(&self) -> ffi::cudaStream_t {
        self.raw
    }
    /// The device the stream belongs to.
    pub fn device(&self) -> usize {
        self.device
    }
    /// True when dropping this value destroys the stream.
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// Whether a graph capture is recording this stream's work.
    pub fn is_capturing(&self) -> Result<bool> {
        let mut status = ffi::cudaStreamCaptureStatus::cudaStreamCaptureStatusNone;
        // SAFETY: `raw` is NULL or a live stream; `status` is a valid out-pointer.
        check(
            unsafe { ffi::cudaStreamIsCapturing(self.raw, &mut status) },
            "cudaStreamIsCapturing",
        )?;
        Ok(status != ffi::cudaStreamCaptureStatus::cudaStreamCaptureStatusNone)
    }

    /// Waits until all work queued on this stream has finished.
    pub fn synchronize(&self) -> Result<()> {
        ensure_device(self.device)?;
        // SAFETY: `raw` is NULL or a live stream (constructor contracts).
        check(
            unsafe { ffi::cudaStreamSynchronize(self.raw) },
            "cudaStreamSynchronize",
        )
    }
}

impl Drop for CudaStream {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: we created this stream and nobody else destroys it. Errors are ignored:
            // a destructor has nowhere to report them, and must not panic.
            unsafe {
                let _ = ffi::cudaStreamDestroy(self.raw);
            }
        }
    }
}

impl fmt::Debug for CudaStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaStream")
            .field("raw", &self.raw)
            .field("device", &self.device)
            .field("owned", &self.owned)
            .finish()
    }
}

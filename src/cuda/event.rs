//! `CudaEvent`: a marker recorded on a stream; two of them time the work between.

use std::fmt;
use std::ptr;

use super::device::ensure_device;
use super::error::check;
use super::ffi;
use super::stream::CudaStream;
use crate::Result;

/// A CUDA event (with timing) on one device.
pub struct CudaEvent {
    raw: ffi::cudaEvent_t,
    device: usize,
}

// SAFETY: an event handle may be used from any host thread; the runtime API is thread-safe.
unsafe impl Send for CudaEvent {}
// SAFETY: as above; methods only pass the handle to the runtime.
unsafe impl Sync for CudaEvent {}

impl CudaEvent {
    /// An event on `device` that records timing.
    pub fn new(device: usize) -> Result<Self> {
        ensure_device(device)?;
        let mut raw: ffi::cudaEvent_t = ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer; flags 0 = default (timing enabled).
        check(
            unsafe { ffi::cudaEventCreateWithFlags(&mut raw, 0) },
            "cudaEventCreateWithFlags",
        )?;
        Ok(CudaEvent { raw, device })
    }

    /// The raw handle, for FFI calls.
    pub fn raw(&self) -> ffi::cudaEvent_t {
        self.raw
    }
    /// The device the event belongs to.
    pub fn device(&self) -> usize {
        self.device
    }

    /// Records the event at the current end of `stream`'s queue.
    pub fn record(&self, stream: &CudaStream) -> Result<()> {
        ensure_device(self.device)?;
        // SAFETY: both handles are live (owned event; stream by its constructor's contract).
        check(
            unsafe { ffi::cudaEventRecord(self.raw, stream.raw()) },
            "cudaEventRecord",
        )
    }

    /// Waits until the work before the last record has finished.
    pub fn synchronize(&self) -> Result<()> {
        // SAFETY: live event handle.
        check(
            unsafe { ffi::cudaEventSynchronize(self.raw) },
            "cudaEventSynchronize",
        )
    }

    /// Milliseconds from this event to `end` (both recorded and complete).
    pub fn elapsed_ms(&self, end: &CudaEvent) -> Result<f32> {
        let mut ms = 0f32;
        // SAFETY: `ms` is a valid out-pointer; both handles are live.
        check(
            unsafe { ffi::cudaEventElapsedTime(&mut ms, self.raw, end.raw) },
            "cudaEventElapsedTime",
        )?;
        Ok(ms)
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        // SAFETY: we created the event and destroy it once; errors are ignored (no panic).
        unsafe {
            let _ = ffi::cudaEventDestroy(self.raw);
        }
    }
}

impl fmt::Debug for CudaEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CudaEvent {{ cuda:{}, {:p} }}", self.device, self.raw)
    }
}

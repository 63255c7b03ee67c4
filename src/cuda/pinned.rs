//! `PinnedBuffer`: page-locked host memory, freed on drop. Copies from it to the device are true
//! asynchronous DMA (and may be captured in a CUDA graph), unlike copies from pageable memory,
//! which CUDA stages synchronously.

use std::ffi::c_void;
use std::fmt;
use std::ptr;

use super::error::check;
use super::ffi;
use crate::Result;

/// `len` bytes of page-locked host memory, zero-filled at allocation.
pub struct PinnedBuffer {
    ptr: *mut c_void,
    len: usize,
}

// SAFETY: the buffer owns its allocation exclusively; mutation needs `&mut self`.
unsafe impl Send for PinnedBuffer {}
// SAFETY: `&self` methods only read the allocation.
unsafe impl Sync for PinnedBuffer {}

impl PinnedBuffer {
    /// Allocates `len` bytes (none for `len == 0`).
    pub fn alloc(len: usize) -> Result<Self> {
        let mut p: *mut c_void = ptr::null_mut();
        if len > 0 {
            // SAFETY: `p` is a valid out-pointer; cudaMallocHost writes an allocation or fails.
            check(
                super::graph::device_wide(|| unsafe { ffi::cudaMallocHost(&mut p, len) }),
                &format!("cudaMallocHost({len} bytes)"),
            )?;
            // SAFETY: `p` points to `len` writable bytes just allocated.
            unsafe { ptr::write_bytes(p.cast::<u8>(), 0, len) };
        }
        Ok(PinnedBuffer { ptr: p, len })
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes. The caller must not write them while a queued copy reads them (wait on an
    /// event recorded after the copy).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: `ptr` is a live allocation of `len` bytes owned by `self`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<u8>(), self.len) }
    }

    /// The bytes, read-only.
    pub fn as_slice(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` is a live allocation of `len` bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: allocated by cudaMallocHost above and freed once; cudaFreeHost waits for
            // queued copies that read it. An error here cannot be reported from drop.
            let _ = super::graph::device_wide(|| unsafe { ffi::cudaFreeHost(self.ptr) });
        }
    }
}

impl fmt::Debug for PinnedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PinnedBuffer {{ {} bytes }}", self.len)
    }
}

//! `DeviceBuffer`: one device allocation, freed on drop — or a borrowed range of one (a
//! workspace arena's slice), which is never freed.
//!
//! The synchronous copies and `memset` wait for all work queued on the buffer's device (every
//! stream) before and after, so they never race with kernels on non-blocking streams. The
//! `_async` variants queue on the caller's stream and return at once.

use std::ffi::c_void;
use std::fmt;
use std::ptr;

use super::device::{ensure_device, synchronize};
use super::error::check;
use super::ffi;
use super::stream::CudaStream;
use crate::{Error, Result};

use ffi::cudaMemcpyKind::{
    cudaMemcpyDeviceToDevice, cudaMemcpyDeviceToHost, cudaMemcpyHostToDevice,
};

/// Device memory of `len` bytes on device `device`.
pub struct DeviceBuffer {
    ptr: *mut c_void,
    len: usize,
    device: usize,
    /// Whether this buffer frees its memory on drop (false for a borrowed range).
    owned: bool,
}

// SAFETY: the buffer owns its allocation exclusively (or, borrowed, a range nothing else uses
// while it lives); a device pointer may be used from any host thread, and mutation needs
// `&mut self`.
unsafe impl Send for DeviceBuffer {}
// SAFETY: `&self` methods only read the allocation (or pass its address to CUDA for reading).
unsafe impl Sync for DeviceBuffer {}

impl DeviceBuffer {
    /// Allocates `len` bytes of uninitialized device memory (no allocation for `len == 0`).
    pub fn alloc(device: usize, len: usize) -> Result<Self> {
        ensure_device(device)?;
        let mut p: *mut c_void = ptr::null_mut();
        if len > 0 {
            // SAFETY: `p` is a valid out-pointer; cudaMalloc writes an allocation or fails.
            check(
                super::graph::device_wide(|| unsafe { ffi::cudaMalloc(&mut p, len) }),
                &format!("cudaMalloc({len} bytes on cuda:{device})"),
            )?;
        }
        Ok(DeviceBuffer {
            ptr: p,
            len,
            device,
            owned: true,
        })
    }

    /// A buffer over `len` bytes at `ptr` on `device` that someone else owns: dropping it frees
    /// nothing.
    ///
    /// # Safety
    /// The range must be device memory of `device` that stays allocated, and is not used for
    /// anything else, for as long as the returned buffer (or a tensor holding it) is used.
    pub(crate) unsafe fn borrowed(ptr: *mut c_void, len: usize, device: usize) -> Self {
        DeviceBuffer {
            ptr,
            len,
            device,
            owned: false,
        }
    }

    /// Allocates `len` bytes set to zero.
    pub fn zeroed(device: usize, len: usize) -> Result<Self> {
        let mut b = Self::alloc(device, len)?;
        b.memset(0)?;
        Ok(b)
    }

    /// A device copy of `bytes` (synchronous).
    pub fn from_host(device: usize, bytes: &[u8]) -> Result<Self> {
        let mut b = Self::alloc(device, bytes.len())?;
        b.copy_from_host(bytes)?;
        Ok(b)
    }

    /// Bytes in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The device ordinal the memory lives on.
    pub fn device(&self) -> usize {
        self.device
    }
    /// The device address (NULL for an empty buffer).
    pub fn as_ptr(&self) -> *const c_void {
        self.ptr
    }
    /// The device address, for kernels that write.
    pub fn as_mut_ptr(&mut self) -> *mut c_void {
        self.ptr
    }

    fn check_len(&self, what: &str, n: usize) -> Result<()> {
        if n != self.len {
            return Err(Error::bad_input(format!(
                "{what}: {n} bytes for a device buffer of {} bytes",
                self.len
            )));
        }
        Ok(())
    }

    /// Sets every byte to `byte` (synchronous).
    pub fn memset(&mut self, byte: u8) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        synchronize(self.device)?;
        // SAFETY: `ptr` is our allocation of `len` bytes.
        check(
            unsafe { ffi::cudaMemset(self.ptr, byte as i32, self.len) },
            "cudaMemset",
        )?;
        synchronize(self.device)
    }

    /// Queues setting every byte to `byte` on `stream`.
    pub fn memset_async(&mut self, byte: u8, stream: &CudaStream) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        ensure_device(self.device)?;
        // SAFETY: `ptr` is our allocation of `len` bytes; it stays allocated until the queued
        // work is done because dropping the buffer calls cudaFree, which waits for the device.
        check(
            unsafe { ffi::cudaMemsetAsync(self.ptr, byte as i32, self.len, stream.raw()) },
            "cudaMemsetAsync",
        )
    }

    /// Copies `src` (exactly `len` bytes) into the buffer (synchronous).
    pub fn copy_from_host(&mut self, src: &[u8]) -> Result<()> {
        self.check_len("copy_from_host", src.len())?;
        if self.len == 0 {
            return Ok(());
        }
        synchronize(self.device)?;
        // SAFETY: both ranges are `len` bytes long and valid; the copy completes before the
        // synchronize below returns.
        check(
            unsafe {
                ffi::cudaMemcpy(
                    self.ptr,
                    src.as_ptr().cast(),
                    self.len,
                    cudaMemcpyHostToDevice,
                )
            },
            "cudaMemcpy (host to device)",
        )?;
        synchronize(self.device)
    }

    /// Copies the buffer into `dst` (exactly `len` bytes), after all queued work on the device.
    pub fn copy_to_host(&self, dst: &mut [u8]) -> Result<()> {
        self.check_len("copy_to_host", dst.len())?;
        if self.len == 0 {
            return Ok(());
        }
        synchronize(self.device)?;
        // SAFETY: both ranges are `len` bytes long and valid; a device-to-pageable-host copy
        // returns only once it is complete.
        check(
            unsafe {
                ffi::cudaMemcpy(
                    dst.as_mut_ptr().cast(),
                    self.ptr,
                    self.len,
                    cudaMemcpyDeviceToHost,
                )
            },
            "cudaMemcpy (device to host)",
        )?;
        synchronize(self.device)
    }

    /// The buffer's bytes on the host (synchronous).
    pub fn to_host_bytes(&self) -> Result<Vec<u8>> {
        let mut v = vec![0u8; self.len];
        self.copy_to_host(&mut v)?;
        Ok(v)
    }

    /// Queues a copy of `src` into the buffer on `stream`.
    ///
    /// # Safety
    /// `src` must stay valid and unchanged until the copy has run (synchronize the stream, or
    /// record and wait on an event). For pageable memory CUDA stages the data before returning,
    /// but for pinned (page-locked) memory the copy really happens later.
    pub unsafe fn copy_from_host_async(&mut self, src: &[u8], stream: &CudaStream) -> Result<()> {
        self.check_len("copy_from_host_async", src.len())?;
        if self.len == 0 {
            return Ok(());
        }
        ensure_device(self.device)?;
        // SAFETY: lengths match; the caller keeps `src` alive (function contract); our
        // allocation outlives the copy (cudaFree waits for the device).
        check(
            unsafe {
                ffi::cudaMemcpyAsync(
                    self.ptr,
                    src.as_ptr().cast(),
                    self.len,
                    cudaMemcpyHostToDevice,
                    stream.raw(),
                )
            },
            "cudaMemcpyAsync (host to device)",
        )
    }

    /// Queues a copy of the buffer into `dst` on `stream`.
    ///
    /// # Safety
    /// `dst` must stay valid, and not be read or written, until the copy has run.
    pub unsafe fn copy_to_host_async(&self, dst: &mut [u8], stream: &CudaStream) -> Result<()> {
        self.check_len("copy_to_host_async", dst.len())?;
        if self.len == 0 {
            return Ok(());
        }
        ensure_device(self.device)?;
        // SAFETY: lengths match; the caller keeps `dst` alive and untouched (contract).
        check(
            unsafe {
                ffi::cudaMemcpyAsync(
                    dst.as_mut_ptr().cast(),
                    self.ptr,
                    self.len,
                    cudaMemcpyDeviceToHost,
                    stream.raw(),
                )
            },
            "cudaMemcpyAsync (device to host)",
        )
    }

    /// Queues a copy of `src` (same length, same device) into this buffer on `stream`.
    pub fn copy_from_device_async(
        &mut self,
        src: &DeviceBuffer,
        stream: &CudaStream,
    ) -> Result<()> {
        self.check_len("copy_from_device_async", src.len)?;
        if src.device != self.device {
            return Err(Error::bad_input(format!(
                "copy_from_device_async: source on cuda:{}, destination on cuda:{}",
                src.device, self.device
            )));
        }
        if self.len == 0 {
            return Ok(());
        }
        ensure_device(self.device)?;
        // SAFETY: both allocations are ours and `len` bytes long; neither is freed before the
        // copy runs because cudaFree waits for the device.
        check(
            unsafe {
                ffi::cudaMemcpyAsync(
                    self.ptr,
                    src.ptr,
                    self.len,
                    cudaMemcpyDeviceToDevice,
                    stream.raw(),
                )
            },
            "cudaMemcpyAsync (device to device)",
        )
    }

    /// A copy on device `device` (synchronous; across devices through cudaMemcpyPeer).
    pub fn copy_to(&self, device: usize) -> Result<Self> {
        let dst = Self::alloc(device, self.len)?;
        if self.len == 0 {
            return Ok(dst);
        }
        synchronize(self.device)?;
        if device == self.device {
            // SAFETY: both allocations are `len` bytes; completion is awaited below.
            check(
                unsafe { ffi::cudaMemcpy(dst.ptr, self.ptr, self.len, cudaMemcpyDeviceToDevice) },
                "cudaMemcpy (device to device)",
            )?;
        } else {
            // SAFETY: as above, each pointer on the device named beside it.
            check(
                unsafe {
                    ffi::cudaMemcpyPeer(
                        dst.ptr,
                        device as i32,
                        self.ptr,
                        self.device as i32,
                        self.len,
                    )
                },
                "cudaMemcpyPeer",
            )?;
        }
        synchronize(device)?;
        synchronize(self.device)?;
        Ok(dst)
    }

    /// A copy on the same device (synchronous).
    pub fn try_clone(&self) -> Result<Self> {
        self.copy_to(self.device)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.owned && !self.ptr.is_null() {
            // SAFETY: we own this allocation and free it once. cudaFree waits for the device's
            // queued work, so kernels still using it finish first. Errors (e.g. a context
            // already torn down at exit) are ignored: nowhere to report them, and no panic.
            unsafe {
                let _ = ensure_device(self.device);
                let _ = super::graph::device_wide(|| ffi::cudaFree(self.ptr));
            }
        }
    }
}

impl fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DeviceBuffer {{ cuda:{}, {} bytes at {:p} }}",
            self.device, self.len, self.ptr
        )
    }
}

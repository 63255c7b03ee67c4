//! Devices: how many, which one the calling thread uses, and what each one is.

use std::ffi::CStr;

use super::error::check;
use super::ffi;
use crate::{Error, Result};

/// Number of CUDA devices. A machine without a driver or a device gives `Err(NoDevice)`.
pub fn device_count() -> Result<usize> {
    let mut n: i32 = 0;
    // SAFETY: `n` is a valid, writable int for the call's duration.
    check(
        unsafe { ffi::cudaGetDeviceCount(&mut n) },
        "cudaGetDeviceCount",
    )?;
    if n <= 0 {
        return Err(Error::NoDevice("cudaGetDeviceCount found 0 devices".into()));
    }
    Ok(n as usize)
}

/// True when at least one CUDA device is usable.
pub fn is_available() -> bool {
    device_count().is_ok()
}

/// The calling thread's current device.
pub fn current_device() -> Result<usize> {
    let mut d: i32 = 0;
    // SAFETY: `d` is a valid, writable int for the call's duration.
    check(unsafe { ffi::cudaGetDevice(&mut d) }, "cudaGetDevice")?;
    Ok(d as usize)
}

/// Makes `ordinal` the calling thread's current device.
pub fn set_device(ordinal: usize) -> Result<()> {
    let d = i32::try_from(ordinal)
        .map_err(|_| Error::NoDevice(format!("device ordinal {ordinal} is out of range")))?;
    // SAFETY: plain value argument; an invalid ordinal is reported as an error code.
    check(
        unsafe { ffi::cudaSetDevice(d) },
        &format!("cudaSetDevice({ordinal})"),
    )
}

/// Makes `ordinal` current unless it already is (the cheap check first).
pub(crate) fn ensure_device(ordinal: usize) -> Result<()> {
    match current_device() {
        Ok(d) if d == ordinal => Ok(()),
        _ => set_device(ordinal),
    }
}

/// Waits for all work queued on `ordinal`, on every stream.
pub fn synchronize(ordinal: usize) -> Result<()> {
    ensure_device(ordinal)?;
    // SAFETY: no arguments; acts on the current device set just above.
    check(
        super::graph::device_wide(|| unsafe { ffi::cudaDeviceSynchronize() }),
        "cudaDeviceSynchronize",
    )
}

/// Free and total device memory in bytes.
pub fn mem_info(ordinal: usize) -> Result<(usize, usize)> {
    ensure_device(ordinal)?;
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: both pointers are valid, writable size_t for the call's duration.
    check(
        unsafe { ffi::cudaMemGetInfo(&mut free, &mut total) },
        "cudaMemGetInfo",
    )?;
    Ok((free, total))
}

/// The CUDA driver's version (e.g. 13000 for 13.0); 0 when no driver is installed.
pub fn driver_version() -> Result<i32> {
    let mut v = 0;
    // SAFETY: `v` is a valid, writable int.
    check(
        unsafe { ffi::cudaDriverGetVersion(&mut v) },
        "cudaDriverGetVersion",
    )?;
    Ok(v)
}

/// The version of the CUDA runtime paradec was linked with (e.g. 13000).
pub fn runtime_version() -> Result<i32> {
    let mut v = 0;
    // SAFETY: `v` is a valid, writable int.
    check(
        unsafe { ffi::cudaRuntimeGetVersion(&mut v) },
        "cudaRuntimeGetVersion",
    )?;
    Ok(v)
}

/// What a device is.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProperties {
    /// The device ordinal.
    pub ordinal: usize,
    /// The marketing name (e.g. "NVIDIA H200").
    pub name: String,
    /// (major, minor), e.g. (9, 0) for Hopper.
    pub compute_capability: (u32, u32),
    /// Streaming multiprocessors.
    pub multiprocessors: u32,
    /// Device memory in bytes.
    pub total_memory: usize,
    /// L2 cache in bytes.
    pub l2_cache_bytes: usize,
    /// Shared memory a block may opt into (beyond the default 48 KiB).
    pub shared_memory_per_block_optin: usize,
    /// Memory bus width in bits.
    pub memory_bus_width_bits: u32,
}

/// The properties of device `ordinal`.
pub fn properties(ordinal: usize) -> Result<DeviceProperties> {
    let d = i32::try_from(ordinal)
        .map_err(|_| Error::NoDevice(format!("device ordinal {ordinal} is out of range")))?;
    let mut p = ffi::cudaDeviceProp::default();
    // SAFETY: `p` is a properly sized and aligned cudaDeviceProp (declared by bindgen from the
    // same header the runtime was built against); the call fills it.
    check(
        unsafe { ffi::cudaGetDeviceProperties(&mut p, d) },
        &format!("cudaGetDeviceProperties({ordinal})"),
    )?;
    let name_bytes: Vec<u8> = p.name.iter().map(|&c| c as u8).collect();
    let name = CStr::from_bytes_until_nul(&name_bytes)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(&name_bytes).into_owned());
    Ok(DeviceProperties {
        ordinal,
        name,
        compute_capability: (p.major as u32, p.minor as u32),
        multiprocessors: p.multiProcessorCount as u32,
        total_memory: p.totalGlobalMem,
        l2_cache_bytes: p.l2CacheSize as usize,
        shared_memory_per_block_optin: p.sharedMemPerBlockOptin,
        memory_bus_width_bits: p.memoryBusWidth as u32,
    })
}

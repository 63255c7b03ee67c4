//! Turning CUDA error codes and launcher statuses into paradec's `Error`: the CUDA error's
//! *name* and the operation that failed; allocation failures become `OutOfMemory`, and "there is
//! no driver or device" becomes `NoDevice`.

use std::ffi::CStr;

use super::ffi;
use crate::{Error, Result};

/// The CUDA name of an error code, e.g. `cudaErrorInvalidValue`.
pub fn error_name(code: ffi::cudaError_t) -> String {
    // SAFETY: cudaGetErrorName accepts any value and returns NULL or a pointer to a static,
    // NUL-terminated string that lives for the whole program.
    let p = unsafe { ffi::cudaGetErrorName(code) };
    if p.is_null() {
        return format!("cudaError({code})");
    }
    // SAFETY: non-null, NUL-terminated and static (see above).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// True for the codes the runtime gives where no usable driver or device exists (cudart is
/// linked statically, so a machine without a driver gets these, not a failed dynamic load).
pub fn is_no_device(code: ffi::cudaError_t) -> bool {
    use ffi::cudaError as e;
    [
        e::cudaErrorNoDevice,
        e::cudaErrorInsufficientDriver,
        e::cudaErrorSystemDriverMismatch,
        e::cudaErrorCompatNotSupportedOnDevice,
        e::cudaErrorStubLibrary,
        e::cudaErrorDevicesUnavailable,
        e::cudaErrorInvalidDevice,
        e::cudaErrorSystemNotReady,
    ]
    .contains(&code)
}

/// The `Error` for a failed CUDA call `op`.
pub fn cuda_error(code: ffi::cudaError_t, op: &str) -> Error {
    let name = error_name(code);
    if code == ffi::cudaError::cudaErrorMemoryAllocation {
        Error::OutOfMemory(format!("{op}: {name}"))
    } else if is_no_device(code) {
        Error::NoDevice(format!("{op}: {name}"))
    } else {
        Error::Cuda {
            op: op.to_string(),
            name,
        }
    }
}

/// `Ok(())` for `cudaSuccess`, else the error of `op`.
pub fn check(code: ffi::cudaError_t, op: &str) -> Result<()> {
    if code == ffi::cudaError::cudaSuccess {
        Ok(())
    } else {
        // The runtime also keeps a failure as the thread's "last error", which the next
        // launch's status check (cudaGetLastError) would report as its own: it is reported
        // here, so clear it (a sticky error stays, and every later call reports it anyway).
        // SAFETY: cudaGetLastError takes no arguments and only reads and resets that state.
        unsafe { ffi::cudaGetLastError() };
        Err(cuda_error(code, op))
    }
}

/// The text of a launcher status (`paradec_kstatus_str`).
pub fn kstatus_str(status: i32) -> String {
    // SAFETY: paradec_kstatus_str accepts any value and returns a static NUL-terminated string.
    let p = unsafe { ffi::paradec_kstatus_str(status) };
    if p.is_null() {
        return format!("status {status}");
    }
    // SAFETY: non-null, NUL-terminated and static.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Maps a launcher's return value: 0 → Ok; negative (argument rejected) → `BadInput`, or
/// `Unsupported` for a dtype; positive (a cudaError_t from the launch) → the CUDA error.
pub fn check_status(status: i32, kernel: &str) -> Result<()> {
    use ffi::paradec_kstatus as k;
    match status {
        k::PARADEC_K_OK => Ok(()),
        k::PARADEC_K_BAD_DTYPE => Err(Error::Unsupported(format!(
            "{kernel}: {}",
            kstatus_str(status)
        ))),
        s if s < 0 => Err(Error::BadInput(format!("{kernel}: {}", kstatus_str(s)))),
        s => Err(cuda_error(
            s as ffi::cudaError_t,
            &format!("launch of {kernel}"),
        )),
    }
}

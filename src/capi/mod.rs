//! The C ABI (`include/paradec.h`, generated from this module by cbindgen; see docs/capi.md).
//!
//! Three levels, all over the same discipline:
//! - **kernel level** (`paradec_op_*`, [`ops`]): one op on tensors the caller owns, described
//!   by DLPack-compatible descriptors ([`paradec_tensor`]); host pointers run the CPU twin in
//!   place, CUDA pointers run the kernel on the caller's stream;
//! - **layer level** (`paradec_layer_*`): one `ParallelDecoder`, built from caller tensors or
//!   taken from a loaded model;
//! - **model level** (`paradec_model_*`, `paradec_cache_*`, `paradec_workspace_*`,
//!   `paradec_lora_*`): load a directory, size it, run it.
//!
//! Discipline (after rustls-ffi): opaque handles with create / free pairs (free accepts NULL);
//! every call returns a [`paradec_status`] whose numbers never change meaning; on failure a
//! thread-local message naming the argument, tensor or field is kept for
//! [`paradec_last_error`]; every pointer is NULL-checked; outputs are written only on success;
//! every export runs inside `catch_unwind`, so a panic becomes `PARADEC_ERR_PANIC`.
//!
//! The exports are safe `extern "C"` functions that dereference the raw pointers C hands them:
//! the contracts (which pointers may be NULL, what they must point to and for how long) are in
//! each function's doc comment, which cbindgen copies into the header.
#![allow(non_camel_case_types, clippy::not_unsafe_ptr_arg_deref)]

pub mod graph;
pub mod handles;
pub mod kv_quant;
pub mod ops;
pub mod tensor;

#[cfg(feature = "cuda")]
mod cuda;

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::Error;

pub use graph::*;
pub use handles::*;
pub use kv_quant::*;
pub use ops::*;
pub use tensor::*;

/// What a call did. The numbers are part of the ABI: they never change meaning, and new codes
/// only ever get new numbers.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum paradec_status {
    /// Success.
    PARADEC_OK = 0,
    /// A required pointer argument is NULL (the message names it).
    PARADEC_ERR_NULL_ARGUMENT = 1,
    /// An argument is out of range or inconsistent with another (an unknown enum value, a
    /// size of 0, an id outside the vocabulary, overlapping outputs, a misaligned pointer).
    PARADEC_ERR_INVALID_ARGUMENT = 2,
    /// A tensor's dtype is not one this call takes.
    PARADEC_ERR_DTYPE = 3,
    /// A tensor's rank or shape does not fit the call.
    PARADEC_ERR_SHAPE = 4,
    /// A tensor is on a device this call does not take, or the tensors of one call are on
    /// different devices.
    PARADEC_ERR_DEVICE = 5,
    /// A tensor's strides are not compact row-major.
    PARADEC_ERR_NOT_CONTIGUOUS = 6,
    /// An options struct's `struct_size` is smaller than the first version of the struct, or
    /// larger with non-zero bytes this version does not know.
    PARADEC_ERR_STRUCT_SIZE = 7,
    /// A file (config.json, safetensors, adapter) is malformed.
    PARADEC_ERR_BAD_FORMAT = 8,
    /// A required file or tensor is missing.
    PARADEC_ERR_NOT_FOUND = 9,
    /// An I/O failure (the message names the path).
    PARADEC_ERR_IO = 10,
    /// Valid input that paradec deliberately does not run (yet): the message names it.
    PARADEC_ERR_UNSUPPORTED = 11,
    /// A KV cache (or workspace) is too small for the request.
    PARADEC_ERR_CAPACITY = 12,
    /// A CUDA call or kernel launch failed (the message names the error and the call).
    PARADEC_ERR_CUDA = 13,
    /// Memory could not be allocated.
    PARADEC_ERR_OUT_OF_MEMORY = 14,
    /// No usable CUDA device, or paradec was built without CUDA.
    PARADEC_ERR_NO_DEVICE = 15,
    /// An internal panic was caught at the boundary (a bug in paradec: please report it).
    PARADEC_ERR_PANIC = 16,
}

use paradec_status::*;

/// A failure on its way to C: the status and the message.
#[derive(Debug)]
pub(crate) struct CErr {
    pub(crate) status: paradec_status,
    pub(crate) msg: String,
}

pub(crate) type CResult<T> = std::result::Result<T, CErr>;

pub(crate) fn cerr(status: paradec_status, msg: impl Into<String>) -> CErr {
    CErr {
        status,
        msg: msg.into(),
    }
}

impl From<Error> for CErr {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::BadInput(_) => PARADEC_ERR_INVALID_ARGUMENT,
            Error::BadFormat(_) => PARADEC_ERR_BAD_FORMAT,
            Error::Unsupported(_) => PARADEC_ERR_UNSUPPORTED,
            Error::NotFound(_) => PARADEC_ERR_NOT_FOUND,
            Error::Io(_) => PARADEC_ERR_IO,
            Error::CapacityExceeded(_) => PARADEC_ERR_CAPACITY,
            Error::Cuda { .. } => PARADEC_ERR_CUDA,
            Error::OutOfMemory(_) => PARADEC_ERR_OUT_OF_MEMORY,
            Error::NoDevice(_) => PARADEC_ERR_NO_DEVICE,
        };
        cerr(status, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    // A message with an interior NUL is cut there rather than lost.
    let msg = msg.split('\0').next().unwrap_or_default();
    let c = CString::new(msg).unwrap_or_default();
    // `try_with`: during thread teardown the slot may be gone; the status still tells.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

/// Runs one export: clears the last error, catches panics, records a failure's message.
pub(crate) fn guard(f: impl FnOnce() -> CResult<()>) -> paradec_status {
    set_last_error("");
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => PARADEC_OK,
        Ok(Err(e)) => {
            set_last_error(&e.msg);
            e.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal panic (a paradec bug): {what}"));
            PARADEC_ERR_PANIC
        }
    }
}

/// A required pointer, as a reference, or `PARADEC_ERR_NULL_ARGUMENT` naming it.
pub(crate) fn req<'a, T>(p: *const T, name: &str) -> CResult<&'a T> {
    if p.is_null() {
        return Err(cerr(
            PARADEC_ERR_NULL_ARGUMENT,
            format!("argument `{name}` is NULL"),
        ));
    }
    // SAFETY: non-NULL; the C caller promises (each function's contract) that it points to a
    // live, initialized value of the declared type for the duration of the call.
    Ok(unsafe { &*p })
}

/// A required pointer to a handle the call may change.
pub(crate) fn req_mut<'a, T>(p: *mut T, name: &str) -> CResult<&'a mut T> {
    if p.is_null() {
        return Err(cerr(
            PARADEC_ERR_NULL_ARGUMENT,
            format!("argument `{name}` is NULL"),
        ));
    }
    // SAFETY: non-NULL; the C caller promises a live value that no other call uses at the same
    // time (handles passed as non-const are not shared between concurrent calls).
    Ok(unsafe { &mut *p })
}

/// Checks an out-pointer before any work, so a NULL one fails before anything happens.
pub(crate) fn out_ptr<T>(p: *mut T, name: &str) -> CResult<*mut T> {
    if p.is_null() {
        return Err(cerr(
            PARADEC_ERR_NULL_ARGUMENT,
            format!("output argument `{name}` is NULL"),
        ));
    }
    Ok(p)
}

/// Writes an output value (after success only). `p` was checked by [`out_ptr`].
pub(crate) fn write_out<T>(p: *mut T, v: T) {
    // SAFETY: `p` is non-NULL (checked by `out_ptr` before the work) and the caller promises it
    // points to writable memory for a `T`; `write` does not read or drop the old contents.
    unsafe { p.write(v) }
}

/// A required NUL-terminated UTF-8 string.
pub(crate) fn cstr<'a>(p: *const c_char, name: &str) -> CResult<&'a str> {
    if p.is_null() {
        return Err(cerr(
            PARADEC_ERR_NULL_ARGUMENT,
            format!("argument `{name}` is NULL"),
        ));
    }
    // SAFETY: non-NULL; the caller promises a NUL-terminated string alive for the call.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| {
        cerr(
            PARADEC_ERR_INVALID_ARGUMENT,
            format!("argument `{name}` is not valid UTF-8"),
        )
    })
}

/// A C array of `n` values (`p` may be NULL only when `n` is 0).
pub(crate) fn slice_arg<'a, T>(p: *const T, n: usize, name: &str) -> CResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(cerr(
            PARADEC_ERR_NULL_ARGUMENT,
            format!("argument `{name}` is NULL but {n} elements were promised"),
        ));
    }
    // SAFETY: non-NULL; the caller promises `n` initialized values alive for the call.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// The version string of the library, e.g. "0.1.0": the same as the header's
/// `PARADEC_VERSION_STRING` when header and library match.
///
/// Ownership: a static string; never free it.
#[no_mangle]
pub extern "C" fn paradec_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The version of the library as MAJOR·10000 + MINOR·100 + PATCH (the header's
/// `PARADEC_VERSION_NUMBER`); compare the two to detect a header / library mismatch.
#[no_mangle]
pub extern "C" fn paradec_version_number() -> u32 {
    let p = |s: &str| s.parse::<u32>().unwrap_or(0);
    p(env!("CARGO_PKG_VERSION_MAJOR")) * 10000
        + p(env!("CARGO_PKG_VERSION_MINOR")) * 100
        + p(env!("CARGO_PKG_VERSION_PATCH"))
}

/// True when the library was built with CUDA (the `cuda` feature). Whether a device is present
/// is a separate question: a CUDA call on a machine without one returns
/// `PARADEC_ERR_NO_DEVICE`.
#[no_mangle]
pub extern "C" fn paradec_has_cuda() -> bool {
    cfg!(feature = "cuda")
}

/// A short English description of a status: "ok", "NULL argument", …; never NULL (an unknown
/// number gives "unknown status").
///
/// Ownership: a static string; never free it.
#[no_mangle]
pub extern "C" fn paradec_status_str(status: i32) -> *const c_char {
    let s: &'static str = match status {
        0 => "ok\0",
        1 => "NULL argument\0",
        2 => "invalid argument\0",
        3 => "wrong dtype\0",
        4 => "wrong shape\0",
        5 => "wrong device\0",
        6 => "not contiguous\0",
        7 => "bad struct_size\0",
        8 => "malformed file\0",
        9 => "not found\0",
        10 => "I/O error\0",
        11 => "unsupported\0",
        12 => "capacity exceeded\0",
        13 => "CUDA error\0",
        14 => "out of memory\0",
        15 => "no CUDA device\0",
        16 => "internal panic\0",
        _ => "unknown status\0",
    };
    s.as_ptr().cast()
}

/// The message of the last failed call on this thread ("" after a successful one), naming the
/// argument, tensor or field that was wrong. Every paradec call but this one resets it.
///
/// Ownership: owned by paradec; valid until the next paradec call on this thread. Copy it to
/// keep it; never free it.
#[no_mangle]
pub extern "C" fn paradec_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_a_status_and_a_message() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let s = guard(|| panic!("boom"));
        std::panic::set_hook(prev);
        assert_eq!(s, PARADEC_ERR_PANIC);
        // SAFETY: paradec_last_error returns a valid NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(paradec_last_error()) };
        assert!(msg.to_str().unwrap().contains("boom"), "{msg:?}");
        assert_eq!(guard(|| Ok(())), PARADEC_OK);
        // SAFETY: as above.
        assert!(unsafe { CStr::from_ptr(paradec_last_error()) }.is_empty());
    }

    #[test]
    fn every_status_has_a_description() {
        for s in 0..=16 {
            // SAFETY: paradec_status_str returns a static NUL-terminated string.
            let d = unsafe { CStr::from_ptr(paradec_status_str(s)) };
            assert_ne!(d.to_str().unwrap(), "unknown status", "{s}");
        }
        assert_eq!(paradec_version_number(), 100);
    }
}

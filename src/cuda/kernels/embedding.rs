//! The token-embedding gather (csrc/embedding.cu).

use super::{check_tensor, dev_ptr, dev_ptr_mut, dtype_code, upload_bytes};
use crate::cuda::device::ensure_device;
use crate::cuda::error::check_status;
use crate::cuda::ffi;
use crate::cuda::stream::CudaStream;
use crate::{DType, Error, Result, Tensor};

/// Checks host token ids against the vocabulary, naming the first bad one.
pub fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().position(|&id| id as usize >= vocab) {
        Some(i) => Err(Error::bad_input(format!(
            "token id {} at position {i} is outside the vocabulary of {vocab}",
            ids[i]
        ))),
        None => Ok(()),
    }
}

/// The dtype code and vocabulary of an embedding table of rows of `hidden`.
fn table_dims(table: &Tensor, hidden: usize) -> Result<(i32, usize)> {
    let code = dtype_code(table.dtype(), "embedding table")?;
    if hidden == 0 || !table.numel().is_multiple_of(hidden) {
        return Err(Error::bad_input(format!(
            "embedding table: shape {:?} is not [vocab, {hidden}]",
            table.shape()
        )));
    }
    Ok((code, table.numel() / hidden))
}

/// `out[t] = table[ids[t]]`: table [vocab, hidden], ids an i32 device tensor, out
/// [ids, hidden]. Twin of `cpu::embedding::embedding`. The ids are on the device and cannot be
/// checked here: an id outside `0..vocab` gives a row of zeros (never a read outside the
/// table). Ids that come from the host should go through [`check_ids`] first.
pub fn embedding(
    table: &Tensor,
    hidden: usize,
    ids: &Tensor,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let (code, vocab) = table_dims(table, hidden)?;
    let dtype = table.dtype();
    check_tensor(table, "embedding table", None, vocab * hidden, stream)?;
    let n = ids.numel();
    check_tensor(ids, "embedding ids", Some(DType::I32), n, stream)?;
    check_tensor(out, "embedding out", Some(dtype), n * hidden, stream)?;
    if n == 0 {
        return Ok(());
    }
    if vocab == 0 {
        return Err(Error::bad_input("embedding table: empty vocabulary"));
    }
    ensure_device(stream.device())?;
    // SAFETY: live device allocations of the checked sizes; the kernel reads only rows of ids
    // inside 0..vocab.
    let status = unsafe {
        ffi::paradec_embedding(
            code,
            dev_ptr(table),
            vocab,
            hidden,
            dev_ptr(ids),
            ffi::paradec_id_type::PARADEC_IDS_I32 as i32,
            n,
            dev_ptr_mut(out),
            stream.raw(),
        )
    };
    check_status(status, "paradec_embedding")
}

/// Checks host ids against the vocabulary and the table and output, then gathers the rows of
/// the ids' device copy at `ids_dev` (u32), which `stage` queues first (it gets the checked id
/// count; nothing is queued when there are no ids).
///
/// # Safety
/// What `stage` returns is a device copy of exactly `ids` (u32) on the stream's device, queued
/// on `stream` (or complete) before the kernel and alive until it has run.
unsafe fn embedding_of_host_ids(
    table: &Tensor,
    hidden: usize,
    ids: &[u32],
    out: &mut Tensor,
    stream: &CudaStream,
    stage: impl FnOnce() -> Result<*const u32>,
) -> Result<()> {
    let (code, vocab) = table_dims(table, hidden)?;
    check_ids(ids, vocab)?;
    let n = ids.len();
    check_tensor(table, "embedding table", None, vocab * hidden, stream)?;
    check_tensor(
        out,
        "embedding out",
        Some(table.dtype()),
        n * hidden,
        stream,
    )?;
    if n == 0 {
        return Ok(());
    }
    let ids_dev = stage()?;
    if ids_dev.is_null() {
        return Err(Error::bad_input(
            "embedding ids: the device copy is missing",
        ));
    }
    ensure_device(stream.device())?;
    // SAFETY: live device allocations of the checked sizes; every id was checked < vocab; the
    // device ids as the function's contract says.
    let status = unsafe {
        ffi::paradec_embedding(
            code,
            dev_ptr(table),
            vocab,
            hidden,
            ids_dev.cast(),
            ffi::paradec_id_type::PARADEC_IDS_U32 as i32,
            n,
            dev_ptr_mut(out),
            stream.raw(),
        )
    };
    check_status(status, "paradec_embedding")
}

/// As [`embedding`], for token ids held on the host: they are checked against the vocabulary
/// here (naming the first bad one), then queued to the device through `ids_scratch`, a U8
/// device tensor of 4 bytes per id (workspace scratch), with no synchronization.
pub fn embedding_host_ids(
    table: &Tensor,
    hidden: usize,
    ids: &[u32],
    ids_scratch: &mut Tensor,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    // SAFETY: the ids are queued into the live scratch tensor on the stream just before the
    // kernel.
    unsafe {
        embedding_of_host_ids(table, hidden, ids, out, stream, || {
            let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
            upload_bytes(ids_scratch, "embedding ids (scratch)", &bytes, stream)?;
            Ok(dev_ptr(ids_scratch).cast())
        })
    }
}

/// As [`embedding_host_ids`], with the ids' device copy already at `ids_dev` (the workspace's
/// staged step) instead of uploading them; the host ids are still checked.
///
/// # Safety
/// `ids_dev` holds a device copy of exactly `ids` (u32), on the stream's device, queued on
/// `stream` (or complete) before this call and alive until the kernel has run.
pub unsafe fn embedding_staged_ids(
    table: &Tensor,
    hidden: usize,
    ids: &[u32],
    ids_dev: *const u32,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    // SAFETY: the function's contract.
    unsafe { embedding_of_host_ids(table, hidden, ids, out, stream, || Ok(ids_dev)) }
}

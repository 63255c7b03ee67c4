//! `Workspace`: the scratch a forward needs, owned by the caller (one per stream).
//!
//! On a device the workspace is an arena: one allocation, reserved up front (`with_capacity`,
//! sized with `bytes_needed`), from which every temporary of a forward is carved by bumping an
//! offset and given back when the forward returns — so a forward makes no device allocation,
//! and the same forward takes the same addresses every time (what a captured CUDA graph needs).
//! A request the arena cannot hold is served by a plain allocation and counted
//! (`overflow_bytes`), so an undersized plan is slow, never wrong; `high_water` says how much
//! a forward really took. Device temporaries are not zeroed (every op writes all of its
//! output); host temporaries are zero-filled allocations (the CPU reference).

mod step;

use std::sync::Arc;

use crate::arch::ArchParams;
use crate::tensor::{DType, Device, Tensor};
use crate::{Error, Result, Stream};
pub use step::StepTables;
pub(crate) use step::{same_pages, widen_table, StagedStep};

/// Arena slices start on 256-byte boundaries: every kernel's vector loads stay aligned.
const ALIGN: usize = 256;

/// Split-K counters the workspace keeps zero between calls (u32 each): 64 KiB, enough for every
/// small-M call of a grouped launch up to about two million output columns.
#[cfg(feature = "cuda")]
const KEPT_COUNTERS: usize = 16384;

/// The scratch a forward needs (see the module docs).
#[derive(Debug)]
pub struct Workspace {
    device: Device,
    dtype: DType,
    /// The device arena (none on the CPU, or before a reservation).
    #[cfg(feature = "cuda")]
    arena: Option<crate::cuda::DeviceBuffer>,
    /// Split-K counters, zero whenever no kernel runs: made zero with the first arena, and
    /// every small-M linear that counts its splits there leaves them zero (`zeroed_counters`).
    #[cfg(feature = "cuda")]
    counters: Option<crate::cuda::DeviceBuffer>,
    /// Bytes of the arena in use.
    top: usize,
    /// Most bytes in use at once (arena and overflow).
    high_water: usize,
    /// Bytes in use outside the arena.
    overflow_now: usize,
    /// Bytes ever allocated outside the arena.
    overflow_total: usize,
    /// When set, a device request the arena cannot hold is `CapacityExceeded` instead of an
    /// allocation (the C ABI's kernel-level calls: an allocation would synchronize).
    strict: bool,
    /// The step tables of the forward in progress (`stage_step`).
    staged: Option<Arc<StagedStep>>,
    /// Their device region, page-locked host copy, and the event after their last upload.
    #[cfg(feature = "cuda")]
    step_region: Option<(crate::cuda::DeviceBuffer, crate::cuda::PinnedBuffer)>,
    #[cfg(feature = "cuda")]
    step_uploaded: Option<crate::cuda::CudaEvent>,
    /// Set while a captured graph reads the step region: it must not move.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    step_frozen: bool,
}

/// Most blocks of the small-M linears' stream loop grid (`ops::stream_grid` caps it here); the
/// plan holds its partial slots for this many.
pub(crate) const STREAM_MAX_BLOCKS: usize = 1024;

/// A point to return the arena to (`Workspace::release`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    top: usize,
    overflow: usize,
}

impl Workspace {
    /// A workspace for `device` computing in `dtype` (a float type), with no arena reserved
    /// yet: until one is (`reserve`), device temporaries are plain allocations.
    pub fn new(device: Device, dtype: DType) -> Result<Self> {
        if !dtype.is_float() {
            return Err(Error::bad_input(format!(
                "workspace dtype {dtype} is not a float type"
            )));
        }
        Ok(Workspace {
            device,
            dtype,
            #[cfg(feature = "cuda")]
            arena: None,
            #[cfg(feature = "cuda")]
            counters: None,
            top: 0,
            high_water: 0,
            overflow_now: 0,
            overflow_total: 0,
            strict: false,
            staged: None,
            #[cfg(feature = "cuda")]
            step_region: None,
            #[cfg(feature = "cuda")]
            step_uploaded: None,
            step_frozen: false,
        })
    }

    /// A workspace with an arena of `bytes` on `device` (nothing is reserved on the CPU).
    pub fn with_capacity(device: Device, dtype: DType, bytes: usize) -> Result<Self> {
        let mut ws = Self::new(device, dtype)?;
        ws.reserve(bytes)?;
        Ok(ws)
    }

    /// A workspace planned for `arch` forwards of up to `tokens` tokens (batch × query
    /// length) over a cache of up to `kv_len` positions per sequence: `with_capacity` with
    /// `bytes_needed`.
    pub fn for_model(
        arch: &ArchParams,
        tokens: usize,
        kv_len: usize,
        device: Device,
        dtype: DType,
    ) -> Result<Self> {
        Self::with_capacity(
            device,
            dtype,
            Self::bytes_needed(arch, tokens, kv_len, dtype)?,
        )
    }

    /// A CPU workspace computing in f32 (the reference path).
    pub fn cpu() -> Self {
        Self::new(Device::Cpu, DType::F32).expect("f32 is a float type")
    }

    /// Where the temporaries live.
    pub fn device(&self) -> Device {
        self.device
    }
    /// The dtype of `tensor`'s temporaries.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Reserves an arena of `bytes` on the workspace's device (replacing a smaller one); on
    /// the CPU it does nothing. Refused while temporaries are taken.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn reserve(&mut self, bytes: usize) -> Result<()> {
        if self.top != 0 || self.overflow_now != 0 {
            return Err(Error::bad_input(
                "workspace: cannot reserve while a forward holds temporaries",
            ));
        }
        match self.device {
            Device::Cpu => Ok(()),
            #[cfg(feature = "cuda")]
            Device::Cuda(ord) => {
                if self.capacity() >= bytes {
                    return Ok(());
                }
                // Free the old arena first: the new one may need its memory.
                self.arena = None;
                self.arena = Some(crate::cuda::DeviceBuffer::alloc(ord, bytes)?);
                if self.counters.is_none() {
                    self.counters =
                        Some(crate::cuda::DeviceBuffer::zeroed(ord, KEPT_COUNTERS * 4)?);
                }
                Ok(())
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(Error::NoDevice(
                "paradec was built without the `cuda` feature".into(),
            )),
        }
    }

    /// Bytes of the device arena.
    pub fn capacity(&self) -> usize {
        #[cfg(feature = "cuda")]
        if let Some(a) = &self.arena {
            return a.len();
        }
        0
    }

    /// Most bytes of temporaries one forward held at once since the workspace was made.
    pub fn high_water(&self) -> usize {
        self.high_water
    }

    /// Bytes of device temporaries that did not fit the arena and were allocated instead
    /// (0 when the plan was large enough).
    pub fn overflow_bytes(&self) -> usize {
        self.overflow_total
    }

    /// A temporary of the workspace's dtype (see the module docs: zero-filled on the host,
    /// uninitialized on a device).
    pub(crate) fn tensor(&mut self, shape: &[usize]) -> Result<Tensor> {
        self.take(shape, self.dtype)
    }

    /// A temporary of another dtype on the workspace's device: the scratch an op needs beside
    /// its inputs and outputs (f32 split-K or split-KV partials, index tables). Ops take every
    /// such temporary from here, never allocating themselves.
    pub(crate) fn scratch(&mut self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.take(shape, dtype)
    }

    /// The split-K counters kept zero between calls (`paradec_zeroed_counters`), from the first
    /// arena on: the small-M linears count their K splits there instead of zeroing counters
    /// per call (a memset or a prep launch each). The workspace serves one stream, so no two
    /// calls that use them run at once.
    #[cfg(feature = "cuda")]
    pub(crate) fn zeroed_counters(&mut self) -> Option<&mut crate::cuda::DeviceBuffer> {
        self.counters.as_mut()
    }

    /// Makes device requests that the arena cannot hold fail (`CapacityExceeded`, before
    /// anything is allocated) instead of allocating; returns the previous setting.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn set_strict(&mut self, on: bool) -> bool {
        std::mem::replace(&mut self.strict, on)
    }

    /// The current point, to `release` back to.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            top: self.top,
            overflow: self.overflow_now,
        }
    }

    /// Gives back everything taken since `m`. Every tensor taken since must be dropped by now:
    /// the arena hands its bytes out again.
    pub(crate) fn release(&mut self, m: Mark) {
        self.top = self.top.min(m.top);
        self.overflow_now = self.overflow_now.min(m.overflow);
    }

    /// Stages one forward's step tables (module `step`): on a device, waits until the previous
    /// upload has been read, writes the tables into page-locked memory and queues one copy to
    /// the device region on `s`; the ops of the forward then read that copy. On the CPU it
    /// records nothing (the reference reads host slices). Call `unstage` when the forward ends.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub(crate) fn stage_step(&mut self, s: &Stream, tables: StepTables) -> Result<()> {
        self.staged = None;
        #[cfg(feature = "cuda")]
        if let (Device::Cuda(ord), Stream::Cuda(cs)) = (self.device, s) {
            let layout = tables.layout();
            if let Some(ev) = &self.step_uploaded {
                // The page-locked copy is rewritten below: the last upload must have read it.
                ev.synchronize()?;
            }
            let fits = self
                .step_region
                .as_ref()
                .is_some_and(|(d, _)| d.len() >= layout.bytes);
            if !fits {
                if self.step_frozen {
                    return Err(Error::CapacityExceeded(format!(
                        "step tables of {} bytes do not fit the {} bytes a captured graph reads \
                         (a larger batch, query or mask than at capture)",
                        layout.bytes,
                        self.step_region.as_ref().map_or(0, |(d, _)| d.len())
                    )));
                }
                self.step_region = None;
                let bytes = layout.bytes.next_multiple_of(4096);
                self.step_region = Some((
                    crate::cuda::DeviceBuffer::alloc(ord, bytes)?,
                    crate::cuda::PinnedBuffer::alloc(bytes)?,
                ));
            }
            if self.step_uploaded.is_none() {
                self.step_uploaded = Some(crate::cuda::CudaEvent::new(ord)?);
            }
            let (dev, host) = self.step_region.as_mut().expect("allocated above");
            tables.write(&layout, host.as_mut_slice());
            let base = dev.as_mut_ptr() as usize;
            // SAFETY: the first `layout.bytes` bytes of the region, which nothing else uses;
            // the view frees nothing.
            let mut view =
                unsafe { crate::cuda::DeviceBuffer::borrowed(dev.as_mut_ptr(), layout.bytes, ord) };
            // SAFETY: the page-locked source is not written again before the event recorded
            // after this copy has completed (waited on above, at the next stage), and it lives
            // in `self`, which a drop frees only after the copy (cudaFreeHost waits).
            unsafe { view.copy_from_host_async(&host.as_slice()[..layout.bytes], cs)? };
            self.step_uploaded
                .as_ref()
                .expect("created above")
                .record(cs)?;
            self.staged = Some(Arc::new(StagedStep {
                tables,
                layout,
                base,
            }));
        }
        Ok(())
    }

    /// The step staged for the forward in progress, if any.
    pub(crate) fn staged(&self) -> Option<Arc<StagedStep>> {
        self.staged.clone()
    }

    /// Ends the staged step: later ops upload their own tables.
    pub(crate) fn unstage(&mut self) {
        self.staged = None;
    }

    /// Keeps the step region where it is (a captured graph reads it): a step that would need
    /// a larger one becomes an error instead. Returns the previous setting.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn freeze_step_region(&mut self, on: bool) -> bool {
        std::mem::replace(&mut self.step_frozen, on)
    }

    fn take(&mut self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = shape
            .iter()
            .try_fold(dtype.size(), |a, &b| a.checked_mul(b))
            .ok_or_else(|| Error::bad_input(format!("workspace: shape {shape:?} overflows")))?;
        #[cfg(feature = "cuda")]
        if let (Some(arena), Device::Cuda(ord)) = (&mut self.arena, self.device) {
            let start = self.top.next_multiple_of(ALIGN);
            if let Some(end) = start.checked_add(bytes).filter(|&e| e <= arena.len()) {
                // SAFETY: [start, end) lies inside the arena, which outlives every tensor taken
                // from it (they are local to the forward that took them and dropped before it
                // releases its mark), and no other live tensor covers these bytes: the offset
                // only grows until a release.
                let view = unsafe {
                    crate::cuda::DeviceBuffer::borrowed(
                        arena.as_mut_ptr().cast::<u8>().add(start).cast(),
                        bytes,
                        ord,
                    )
                };
                self.top = end;
                self.high_water = self.high_water.max(self.top + self.overflow_now);
                return Tensor::from_device_buffer(view, dtype, shape);
            }
        }
        if self.strict && bytes > 0 && self.device != Device::Cpu {
            return Err(Error::CapacityExceeded(format!(
                "workspace: {bytes} bytes of scratch do not fit its arena ({} bytes, {} in use); \
                 reserve a larger one (paradec_workspace_reserve)",
                self.capacity(),
                self.top
            )));
        }
        let t = Tensor::zeros(shape, dtype, self.device)?;
        if self.device != Device::Cpu {
            let aligned = bytes.next_multiple_of(ALIGN);
            self.overflow_now += aligned;
            self.overflow_total += aligned;
        }
        self.high_water = self.high_water.max(self.top + self.overflow_now);
        Ok(t)
    }

    /// As [`Workspace::bytes_needed`], for a cache in `mode`: a prefill (more than 16 query
    /// tokens per sequence) over a quantized cache first dequantizes the K and V it reads
    /// into the workspace, up to `kv_len` positions of every sequence of the batch (at most
    /// `tokens / 17 + 1` sequences). Decode reads quantized pages directly, its kernel
    /// splitting the keys up to 256 ways (one split per 128 keys at most), so its partials may
    /// outgrow the native plan's.
    pub fn bytes_needed_for_mode(
        arch: &ArchParams,
        tokens: usize,
        kv_len: usize,
        dtype: DType,
        mode: &crate::kv_quant::KvCacheMode,
    ) -> Result<usize> {
        let base = Self::bytes_needed(arch, tokens, kv_len, dtype)?;
        if *mode == crate::kv_quant::KvCacheMode::Native {
            return Ok(base);
        }
        Self::gather_bytes(arch, tokens, kv_len, dtype)
            .zip(Self::page_decode_extra(arch, tokens, kv_len))
            .and_then(|(g, e)| g.checked_add(e))
            .and_then(|n| n.checked_add(base))
            .ok_or_else(|| Error::bad_input("workspace size overflows"))
    }

    /// As [`Workspace::bytes_needed_for_mode`], for a paged cache (`KvCache::paged`, any
    /// mode) whose calls carry block tables of up to `max_pages` pages of `page_size`
    /// positions per sequence (so a sequence reaches at most max_pages · page_size
    /// positions): in every mode, the native one included, a prefill gathers the K and V it
    /// reads out of the pages into the workspace and decode runs the pages' kernel; each
    /// layer's cache write and attention also upload the block table (int32 [batch,
    /// max_pages]) into workspace scratch.
    pub fn bytes_needed_paged(
        arch: &ArchParams,
        tokens: usize,
        max_pages: usize,
        page_size: usize,
        dtype: DType,
    ) -> Result<usize> {
        let overflow = || Error::bad_input("workspace size overflows");
        let kv_len = max_pages.checked_mul(page_size).ok_or_else(overflow)?;
        let base = Self::bytes_needed(arch, tokens, kv_len, dtype)?;
        let gather = Self::gather_bytes(arch, tokens, kv_len, dtype)
            .zip(Self::page_decode_extra(arch, tokens, kv_len))
            .and_then(|(g, e)| g.checked_add(e))
            .ok_or_else(overflow)?;
        // Two tables at once (the write's, then attention's or the gather's beside attention's),
        // each after its call's other tables, aligned.
        let tables = tokens
            .checked_mul(max_pages)
            .and_then(|n| n.checked_mul(2 * 4))
            .and_then(|n| n.checked_add(4 * ALIGN))
            .ok_or_else(overflow)?;
        base.checked_add(gather)
            .and_then(|n| n.checked_add(tables))
            .ok_or_else(overflow)
    }

    /// The decode partials over pages beyond the native plan's 64 splits: f32 context and two
    /// statistics per query row and head, for up to min(256, ⌈kv_len / 128⌉) splits.
    fn page_decode_extra(arch: &ArchParams, tokens: usize, kv_len: usize) -> Option<usize> {
        let splits = kv_len.div_ceil(128).clamp(1, 256);
        tokens
            .checked_mul(arch.heads)?
            .checked_mul((arch.head_dim + 2) * 4)?
            .checked_mul(splits.saturating_sub(64))
    }

    /// K and V of `kv_len` positions of every sequence a prefill of `tokens` tokens can have
    /// (more than 16 query tokens each: at most `tokens / 17 + 1`), in `dtype`, aligned: what
    /// a prefill over pages gathers (dequantizes) into scratch before the native kernel.
    fn gather_bytes(
        arch: &ArchParams,
        tokens: usize,
        kv_len: usize,
        dtype: DType,
    ) -> Option<usize> {
        let seqs = tokens / 17 + 1;
        seqs.checked_mul(kv_len)
            .and_then(|n| n.checked_mul(2 * arch.kv_heads * arch.head_dim))
            .and_then(|n| n.checked_mul(dtype.size()))
            .and_then(|n| n.checked_add(2 * ALIGN))
    }

    /// Device bytes a workspace needs for forwards of up to `tokens` tokens over up to
    /// `kv_len` cached positions per sequence: one decoder layer's temporaries (norm outputs,
    /// q/k/v and the fused projection, attention context, both branch outputs, the MLP's
    /// inner activations), the model's hidden states, and the kernels' scratch (split-K and
    /// split-KV partials in f32, per-call tables), each slice rounded up to the arena's
    /// alignment. An estimate on the generous side; `high_water` after a forward says what
    /// it took.
    pub fn bytes_needed(
        arch: &ArchParams,
        tokens: usize,
        kv_len: usize,
        dtype: DType,
    ) -> Result<usize> {
        let overflow = || Error::bad_input("workspace size overflows");
        let norms = if arch.two_norms { 2 } else { 1 } * arch.hidden;
        let qkv = 2 * arch.qkv_width(); // fused output and split copies
        let attn = arch.heads * arch.head_dim + 3 * arch.hidden; // context, branch outputs, sum
        let mlp = 3 * arch.intermediate; // gate, up, gated product
        let per_token = norms + qkv + attn + mlp + 2 * arch.hidden; // + model hidden, normed
        let temps = tokens
            .checked_mul(per_token)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(overflow)?;
        // Split-K partials (f32, up to 32 splits of the widest output, or the small-M stream
        // loop's two slots of 128 columns per block of up to 1024) and split-KV partials (f32
        // context and two statistics per split of up to 64 blocks per sequence and head).
        let widest = arch.qkv_width().max(arch.intermediate).max(arch.hidden);
        let stream_slots = tokens.min(16) * STREAM_MAX_BLOCKS * 2 * 128 * 4;
        let split_k = (tokens.min(64) * widest * 32 * 4).max(stream_slots);
        let split_kv = tokens
            .checked_mul(arch.heads)
            .and_then(|n| n.checked_mul(64 * (arch.head_dim + 2) * 4))
            .ok_or_else(overflow)?;
        // Per-call tables: positions, lengths, masks over the cache, token ids.
        let tables = tokens * (kv_len + 64) * 4 + 64 * 1024;
        temps
            .checked_add(split_k)
            .and_then(|n| n.checked_add(split_kv))
            .and_then(|n| n.checked_add(tables))
            .and_then(|n| n.checked_add(64 * ALIGN))
            .ok_or_else(overflow)
    }
}

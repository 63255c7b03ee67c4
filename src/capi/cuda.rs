//! The CUDA arm of the kernel level: the raw launchers of `csrc/` called on the caller's device
//! pointers and stream. This is the only file of the C ABI that names a launcher, so renaming
//! the internal launchers (see docs/capi.md) touches only it.

use std::ffi::c_void;
use std::ptr;

use super::tensor::View;
use super::{cerr, paradec_status::*, CResult};
use crate::cuda::device::{current_device, set_device};
use crate::cuda::error::check_status;
use crate::cuda::ffi;
use crate::tensor::DType;
use crate::vocab::{Activation, NormKind, RopeStyle};

/// Makes the tensors' device current for the launch and restores the caller's afterwards.
struct OnDevice(Option<usize>);

fn on_device(dev: usize) -> CResult<OnDevice> {
    let prev = current_device()?;
    if prev != dev {
        set_device(dev)?;
        return Ok(OnDevice(Some(prev)));
    }
    Ok(OnDevice(None))
}

impl Drop for OnDevice {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            // Nowhere to report a failure from a destructor; the launch's status stands.
            let _ = set_device(p);
        }
    }
}

fn dtype_code(v: &View) -> CResult<i32> {
    match v.dtype {
        DType::F16 => Ok(ffi::paradec_dtype::PARADEC_F16 as i32),
        DType::BF16 => Ok(ffi::paradec_dtype::PARADEC_BF16 as i32),
        DType::F32 => Err(cerr(
            PARADEC_ERR_UNSUPPORTED,
            format!(
                "{}: the CUDA kernels take f16 or bf16 tensors, not f32",
                v.name
            ),
        )),
        other => Err(cerr(
            PARADEC_ERR_DTYPE,
            format!("{}: expected f16 or bf16, got {other}", v.name),
        )),
    }
}

fn raw_stream(s: *mut c_void) -> ffi::cudaStream_t {
    s as ffi::cudaStream_t
}

fn p(v: Option<&View>) -> *const c_void {
    v.map_or(ptr::null(), |v| v.ptr as *const c_void)
}

fn act_code(act: Activation) -> i32 {
    use ffi::paradec_activation as a;
    (match act {
        Activation::GeluErf => a::PARADEC_GELU_ERF,
        Activation::GeluNew => a::PARADEC_GELU_NEW,
        Activation::GeluFast => a::PARADEC_GELU_FAST,
        Activation::Silu => a::PARADEC_SILU,
        Activation::Relu => a::PARADEC_RELU,
    }) as i32
}

type Second<'a> = (Option<&'a View>, Option<&'a View>, &'a View);

pub(crate) fn norm_fused(
    dev: usize,
    stream: *mut c_void,
    kind: NormKind,
    x: &View,
    residual: Option<&View>,
    (wa, ba): (Option<&View>, Option<&View>),
    out_a: &View,
    second: Option<Second<'_>>,
    rows: usize,
    cols: usize,
    eps: f32,
) -> CResult<()> {
    let code = dtype_code(x)?;
    if rows * cols == 0 {
        return Ok(());
    }
    let kind = match kind {
        NormKind::LayerNorm => ffi::paradec_norm_kind::PARADEC_LAYER_NORM,
        NormKind::RmsNorm => ffi::paradec_norm_kind::PARADEC_RMS_NORM,
    } as i32;
    let (wb, bb, ob) = match second {
        Some((w, b, o)) => (p(w), p(b), o.ptr as *mut c_void),
        None => (ptr::null(), ptr::null(), ptr::null_mut()),
    };
    let _d = on_device(dev)?;
    // SAFETY: every pointer is NULL (optional) or the caller's device memory of the checked
    // shape and dtype on device `dev`, which the caller keeps alive until the stream has run
    // the kernel (the descriptor contract); the launcher checks the sizes again and never
    // synchronizes.
    let status = unsafe {
        ffi::paradec_norm_fused(
            kind,
            code,
            x.ptr as *mut c_void,
            p(residual),
            p(wa),
            p(ba),
            out_a.ptr as *mut c_void,
            wb,
            bb,
            ob,
            rows,
            cols,
            eps,
            raw_stream(stream),
        )
    };
    Ok(check_status(status, "norm kernel")?)
}

pub(crate) fn rotary_cache_write(
    dev: usize,
    stream: *mut c_void,
    q: &View,
    k: &View,
    v: &View,
    [batch, q_len, heads, kvh, d, capacity]: [usize; 6],
    rot: Option<(RopeStyle, usize, &View, f32, &View)>,
    past: &View,
    ck: &View,
    cv: &View,
) -> CResult<()> {
    let code = dtype_code(q)?;
    if batch * q_len * kvh * d == 0 {
        return Ok(());
    }
    let (style, rot_dim, inv, factor, pos) = match rot {
        Some((s, r, f, a, pos)) => {
            let s = match s {
                RopeStyle::Interleaved => ffi::paradec_rope_style::PARADEC_ROPE_INTERLEAVED,
                RopeStyle::Half => ffi::paradec_rope_style::PARADEC_ROPE_HALF,
            } as i32;
            (s, r, f.ptr as *const f32, a, pos.ptr as *const i64)
        }
        None => (0, 0, ptr::null(), 1.0, ptr::null()),
    };
    let _d = on_device(dev)?;
    // SAFETY: as in `norm_fused`: the caller's device memory of the checked shapes on `dev`.
    let status = unsafe {
        ffi::paradec_rotary_cache_write(
            code,
            q.ptr as *mut c_void,
            k.ptr as *mut c_void,
            v.ptr as *const c_void,
            batch,
            q_len,
            heads,
            kvh,
            d,
            pos,
            style,
            rot_dim,
            inv,
            factor,
            past.ptr as *const i64,
            capacity,
            ck.ptr as *mut c_void,
            cv.ptr as *mut c_void,
            raw_stream(stream),
        )
    };
    Ok(check_status(status, "rotary + cache write kernel")?)
}

pub(crate) fn activate(dev: usize, stream: *mut c_void, act: Activation, x: &View) -> CResult<()> {
    let code = dtype_code(x)?;
    if x.numel == 0 {
        return Ok(());
    }
    let _d = on_device(dev)?;
    // SAFETY: as in `norm_fused`.
    let status = unsafe {
        ffi::paradec_activate(
            act_code(act),
            code,
            x.ptr as *mut c_void,
            x.numel,
            raw_stream(stream),
        )
    };
    Ok(check_status(status, "activation kernel")?)
}

pub(crate) fn act_mul(
    dev: usize,
    stream: *mut c_void,
    act: Activation,
    gate: &View,
    up: &View,
    out: &View,
) -> CResult<()> {
    let code = dtype_code(gate)?;
    if gate.numel == 0 {
        return Ok(());
    }
    let _d = on_device(dev)?;
    // SAFETY: as in `norm_fused`.
    let status = unsafe {
        ffi::paradec_act_mul(
            act_code(act),
            code,
            gate.ptr as *const c_void,
            up.ptr as *const c_void,
            out.ptr as *mut c_void,
            gate.numel,
            raw_stream(stream),
        )
    };
    Ok(check_status(status, "gated multiply kernel")?)
}

pub(crate) fn add(dev: usize, stream: *mut c_void, x: &View, y: &View) -> CResult<()> {
    let code = dtype_code(x)?;
    if x.numel == 0 {
        return Ok(());
    }
    let _d = on_device(dev)?;
    // SAFETY: as in `norm_fused`.
    let status = unsafe {
        ffi::paradec_add_inplace(
            code,
            x.ptr as *mut c_void,
            y.ptr as *const c_void,
            x.numel,
            raw_stream(stream),
        )
    };
    Ok(check_status(status, "add kernel")?)
}

pub(crate) fn embedding(
    dev: usize,
    stream: *mut c_void,
    table: &View,
    vocab: usize,
    hidden: usize,
    ids: &View,
    out: &View,
) -> CResult<()> {
    let code = dtype_code(table)?;
    if ids.numel == 0 || hidden == 0 {
        return Ok(());
    }
    if vocab == 0 {
        return Err(cerr(PARADEC_ERR_SHAPE, "table: empty vocabulary"));
    }
    let _d = on_device(dev)?;
    // SAFETY: as in `norm_fused`; the kernel reads only table rows of ids inside 0..vocab.
    let status = unsafe {
        ffi::paradec_embedding(
            code,
            table.ptr as *const c_void,
            vocab,
            hidden,
            ids.ptr as *const c_void,
            ffi::paradec_id_type::PARADEC_IDS_I32 as i32,
            ids.numel,
            out.ptr as *mut c_void,
            raw_stream(stream),
        )
    };
    Ok(check_status(status, "embedding kernel")?)
}

// ---- ops on borrowed tensors --------------------------------------------------------------
//
// The calls below run the crate's `ops` (the same dispatch the layers use) on tensors that
// borrow the caller's device memory and on the caller's stream: nothing is copied, nothing is
// freed, nothing synchronizes. Scratch comes from the caller's workspace arena, strictly: a
// request the arena cannot hold fails before any launch instead of allocating.

use super::kv_quant::{Pages, Side};
use crate::cuda::{CudaStream, DeviceBuffer};
use crate::kv_quant::{BlockTable, QuantLayer, QuantPages};
use crate::quant::PreparedQuant;
use crate::vocab::{Affine, AttnMasking, AttnShape, CacheSlots, QkvLayout, RotaryArgs};
use crate::workspace::Workspace;
use crate::{ops, Stream, Tensor};

/// A tensor over the caller's device memory of `v` (never freed here).
pub(super) fn borrow(v: &View, dev: usize) -> CResult<Tensor> {
    // SAFETY: `v` is the caller's device memory of `v.bytes()` bytes on `dev` (the descriptor
    // contract), alive until the work queued on the stream has run; the borrowed buffer never
    // frees it, and the tensor lives only for this call.
    let b = unsafe { DeviceBuffer::borrowed(v.ptr.cast(), v.bytes(), dev) };
    Ok(Tensor::from_device_buffer(b, v.dtype, &v.shape)?)
}

fn borrow_opt(v: Option<&View>, dev: usize) -> CResult<Option<Tensor>> {
    v.map(|v| borrow(v, dev)).transpose()
}

/// The caller's stream, borrowed (NULL = the legacy default stream); never destroyed here.
fn stream_of(raw: *mut c_void, dev: usize) -> Stream {
    // SAFETY: the caller promises (every kernel-level call's contract) that `stream` is NULL or
    // a live stream of the tensors' device that outlives the queued work.
    Stream::Cuda(unsafe { CudaStream::from_raw(raw as ffi::cudaStream_t, dev) })
}

/// Runs `f` with the workspace in strict mode and gives its scratch back afterwards (the next
/// call on the same stream reuses it, ordered after this call's kernels).
fn scratch<R>(
    ws: &mut Workspace,
    f: impl FnOnce(&mut Workspace) -> crate::Result<R>,
) -> CResult<R> {
    let prev = ws.set_strict(true);
    let m = ws.mark();
    let r = f(ws);
    ws.release(m);
    ws.set_strict(prev);
    Ok(r?)
}

pub(crate) fn linear(
    dev: usize,
    stream: *mut c_void,
    x: &View,
    w: &View,
    bias: Option<&View>,
    out: &View,
    accumulate: bool,
) -> CResult<()> {
    let (xt, wt, bt, mut ot) = (
        borrow(x, dev)?,
        borrow(w, dev)?,
        borrow_opt(bias, dev)?,
        borrow(out, dev)?,
    );
    let s = stream_of(stream, dev);
    let _d = on_device(dev)?;
    // The dense path takes no scratch; a CPU workspace stands in for the argument.
    let mut ws = Workspace::cpu();
    Ok(ops::linear(
        &s,
        &mut ws,
        &xt,
        &wt,
        bt.as_ref(),
        &mut ot,
        accumulate,
    )?)
}

pub(crate) fn prepared_linear(
    dev: usize,
    stream: *mut c_void,
    ws: &mut Workspace,
    x: &View,
    w: &PreparedQuant,
    out: &View,
    accumulate: bool,
) -> CResult<()> {
    let (xt, mut ot) = (borrow(x, dev)?, borrow(out, dev)?);
    let s = stream_of(stream, dev);
    let _d = on_device(dev)?;
    scratch(ws, |ws| {
        ops::prepared_linear(&s, ws, &xt, w, &mut ot, accumulate)
    })
}

pub(crate) fn split_qkv(
    dev: usize,
    stream: *mut c_void,
    layout: QkvLayout,
    f: &View,
    [heads, kvh, d]: [usize; 3],
    (q, k, v): (&View, &View, &View),
) -> CResult<()> {
    let ft = borrow(f, dev)?;
    let (mut qt, mut kt, mut vt) = (borrow(q, dev)?, borrow(k, dev)?, borrow(v, dev)?);
    let s = stream_of(stream, dev);
    let _d = on_device(dev)?;
    Ok(ops::split_qkv(
        &s, layout, &ft, heads, kvh, d, &mut qt, &mut kt, &mut vt,
    )?)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn head_norm(
    dev: usize,
    stream: *mut c_void,
    kind: NormKind,
    x: &View,
    [heads, d]: [usize; 2],
    w: Option<&View>,
    b: Option<&View>,
    eps: f32,
) -> CResult<()> {
    let mut xt = borrow(x, dev)?;
    let (wt, bt) = (borrow_opt(w, dev)?, borrow_opt(b, dev)?);
    let s = stream_of(stream, dev);
    let _d = on_device(dev)?;
    let aff = Affine {
        weight: wt.as_ref(),
        bias: bt.as_ref(),
    };
    Ok(ops::head_norm(&s, kind, &mut xt, heads, d, &aff, eps)?)
}

pub(crate) fn scale(dev: usize, stream: *mut c_void, x: &View, factor: f32) -> CResult<()> {
    let mut xt = borrow(x, dev)?;
    let s = stream_of(stream, dev);
    let _d = on_device(dev)?;
    Ok(ops::scale_inplace(&s, &mut xt, factor)?)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    dev: usize,
    stream: *mut c_void,
    ws: &mut Workspace,
    q: &View,
    ck: &View,
    cv: &View,
    shape: &AttnShape,
    masking: &AttnMasking<'_>,
    scale: f32,
    out: &View,
) -> CResult<()> {
    let (qt, kt, vt, mut ot) = (
        borrow(q, dev)?,
        borrow(ck, dev)?,
        borrow(cv, dev)?,
        borrow(out, dev)?,
    );
    let s = stream_of(stream, dev);
    let _d = on_device(dev)?;
    scratch(ws, |ws| {
        ops::attention(&s, ws, &qt, &kt, &vt, shape, masking, scale, &mut ot)
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn rotary_checked(
    dev: usize,
    stream: *mut c_void,
    ws: &mut Workspace,
    (q, k, v): (&View, &View, &View),
    [heads, kvh, d]: [usize; 3],
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    (ck, cv): (&View, &View),
) -> CResult<()> {
    let (mut qt, mut kt, vt) = (borrow(q, dev)?, borrow(k, dev)?, borrow(v, dev)?);
    let (mut ckt, mut cvt) = (borrow(ck, dev)?, borrow(cv, dev)?);
    let s = stream_of(stream, dev);
    let _d = on_device(dev)?;
    scratch(ws, |ws| {
        ops::rotary_and_cache_write(
            &s, ws, &mut qt, &mut kt, &vt, heads, kvh, d, positions, rotary, slots, &mut ckt,
            &mut cvt,
        )
    })
}

/// One layer's pages over the caller's device memory (never freed here).
fn borrow_pages(p: &Pages, dev: usize) -> CResult<QuantLayer> {
    let side = |s: &Side| -> CResult<QuantPages> {
        Ok(QuantPages {
            format: s.format,
            codes: borrow(&s.data, dev)?,
            scales: borrow_opt(s.scales.as_ref(), dev)?,
            head_scales: borrow_opt(s.head_scales.as_ref(), dev)?,
        })
    };
    Ok(QuantLayer {
        k: side(&p.k)?,
        v: side(&p.v)?,
    })
}

/// The rotary + cache write into the caller's pages: a contiguous cache (`table` None) or a
/// paged pool. A contiguous native cache takes the native kernel (its values are a cache of
/// the dtype); every other layout the quantizing one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn kv_write(
    dev: usize,
    stream: *mut c_void,
    ws: &mut Workspace,
    (q, k, v): (&View, &View, &View),
    [heads, kvh, d]: [usize; 3],
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    table: Option<&BlockTable<'_>>,
    pages: &Pages,
) -> CResult<()> {
    if table.is_none() && pages.is_native() {
        return rotary_checked(
            dev,
            stream,
            ws,
            (q, k, v),
            [heads, kvh, d],
            positions,
            rotary,
            slots,
            (&pages.k.data, &pages.v.data),
        );
    }
    let (mut qt, mut kt, vt) = (borrow(q, dev)?, borrow(k, dev)?, borrow(v, dev)?);
    let mut layer = borrow_pages(pages, dev)?;
    let s = stream_of(stream, dev);
    let _d = on_device(dev)?;
    scratch(ws, |ws| match table {
        None => ops::rotary_and_cache_write_quant(
            &s, ws, &mut qt, &mut kt, &vt, heads, kvh, d, positions, rotary, slots, &mut layer,
        ),
        Some(t) => ops::paged_rotary_and_cache_write(
            &s,
            ws,
            &mut qt,
            &mut kt,
            &vt,
            heads,
            kvh,
            d,
            positions,
            rotary,
            slots.past_len,
            slots.q_len,
            t,
            &mut layer,
        ),
    })
}

/// Attention over the caller's pages: a contiguous cache (`table` None) or a paged pool. A
/// contiguous native cache takes the native kernel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn kv_attention(
    dev: usize,
    stream: *mut c_void,
    ws: &mut Workspace,
    q: &View,
    pages: &Pages,
    table: Option<&BlockTable<'_>>,
    shape: &AttnShape,
    masking: &AttnMasking<'_>,
    scale: f32,
    out: &View,
) -> CResult<()> {
    if table.is_none() && pages.is_native() {
        return attention(
            dev,
            stream,
            ws,
            q,
            &pages.k.data,
            &pages.v.data,
            shape,
            masking,
            scale,
            out,
        );
    }
    let (qt, mut ot) = (borrow(q, dev)?, borrow(out, dev)?);
    let layer = borrow_pages(pages, dev)?;
    let s = stream_of(stream, dev);
    let _d = on_device(dev)?;
    scratch(ws, |ws| match table {
        None => ops::attention_quant(&s, ws, &qt, &layer, shape, masking, scale, &mut ot),
        Some(t) => ops::paged_attention(&s, ws, &qt, &layer, t, shape, masking, scale, &mut ot),
    })
}

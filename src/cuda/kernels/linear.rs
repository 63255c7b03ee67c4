//! Dense and quantized linears and the in-place scale (csrc/linear.cu, csrc/kernels/linear.h).
//! Twins of `cpu::linear::linear` and `quant::QuantWeight::forward`.

use std::ptr;

use super::{check_tensor, dev_ptr, dev_ptr_mut, dtype_code, opt_ptr};
use crate::cuda::buffer::DeviceBuffer;
use crate::cuda::device::ensure_device;
use crate::cuda::error::check_status;
use crate::cuda::ffi;
use crate::cuda::stream::CudaStream;
use crate::quant::PreparedQuant;
use crate::vocab::{Activation, LinearPath};
use crate::{DType, Error, Result, Tensor};

fn path_code(p: LinearPath) -> i32 {
    (match p {
        LinearPath::Gemv => ffi::paradec_linear_path::PARADEC_PATH_GEMV,
        LinearPath::Mma => ffi::paradec_linear_path::PARADEC_PATH_MMA,
        LinearPath::Small => ffi::paradec_linear_path::PARADEC_PATH_SMALL,
        LinearPath::SmallLean => ffi::paradec_linear_path::PARADEC_PATH_SMALL_LEAN,
        LinearPath::SmallStream => ffi::paradec_linear_path::PARADEC_PATH_SMALL_STREAM,
        LinearPath::Vendor => ffi::paradec_linear_path::PARADEC_PATH_VENDOR,
        LinearPath::Wgmma => ffi::paradec_linear_path::PARADEC_PATH_WGMMA,
    }) as i32
}

/// A quantized weight in the device layout (see `csrc/kernels/linear.h`): the tensors and sizes
/// of `paradec_qweight`.
pub struct QuantWeightArgs<'a> {
    /// I32 `[word_rows, np]`.
    pub words: &'a Tensor,
    /// I32 `[ntiles, 2]`.
    pub tiles: &'a Tensor,
    /// F32 `[groups, np, 2]`.
    pub sz: &'a Tensor,
    /// I32 `[kp]`.
    pub row_src: Option<&'a Tensor>,
    /// K, the input features.
    pub k: usize,
    /// N, the output features.
    pub n: usize,
    /// N rounded up to 8 (the stored width).
    pub np: usize,
    /// Stored rows: `ntiles · 32`.
    pub kp: usize,
    /// Tiles of 32 stored rows.
    pub ntiles: usize,
    /// Groups (one scale and zero per group and column).
    pub groups: usize,
    /// Packed word rows.
    pub word_rows: usize,
    /// Width of every tile, 0 when mixed.
    pub bits: u32,
}

impl<'a> QuantWeightArgs<'a> {
    /// The kernels' view of a weight prepared on a device.
    pub fn of(w: &'a PreparedQuant) -> Self {
        QuantWeightArgs {
            words: &w.words,
            tiles: &w.tiles,
            sz: &w.sz,
            row_src: w.row_src.as_ref(),
            k: w.k,
            n: w.n,
            np: w.np,
            kp: w.kp,
            ntiles: w.ntiles,
            groups: w.groups,
            word_rows: w.word_rows,
            bits: w.bits,
        }
    }
}

impl QuantWeightArgs<'_> {
    fn check(&self, stream: &CudaStream) -> Result<ffi::paradec_qweight> {
        check_tensor(
            self.words,
            "quantized weight words",
            Some(DType::I32),
            self.word_rows * self.np,
            stream,
        )?;
        check_tensor(
            self.tiles,
            "quantized weight tiles",
            Some(DType::I32),
            self.ntiles * 2,
            stream,
        )?;
        check_tensor(
            self.sz,
            "quantized weight scales",
            Some(DType::F32),
            self.groups * self.np * 2,
            stream,
        )?;
        if let Some(r) = self.row_src {
            check_tensor(
                r,
                "quantized weight row map",
                Some(DType::I32),
                self.kp,
                stream,
            )?;
        }
        Ok(ffi::paradec_qweight {
            words: dev_ptr(self.words) as *const u32,
            tiles: dev_ptr(self.tiles) as *const u32,
            sz: dev_ptr(self.sz) as *const f32,
            row_src: opt_ptr(self.row_src) as *const i32,
            k: self.k,
            n: self.n,
            np: self.np,
            kp: self.kp,
            ntiles: self.ntiles,
            groups: self.groups,
            word_rows: self.word_rows,
            bits: self.bits as i32,
        })
    }

    /// The sizes of `paradec_qweight` with no arrays (row_src non-NULL when the weight has
    /// one): what the scratch-size queries read.
    fn sizes(&self) -> ffi::paradec_qweight {
        ffi::paradec_qweight {
            words: ptr::null(),
            tiles: ptr::null(),
            sz: ptr::null(),
            row_src: if self.row_src.is_some() {
                ptr::NonNull::<i32>::dangling().as_ptr()
            } else {
                ptr::null()
            },
            k: self.k,
            n: self.n,
            np: self.np,
            kp: self.kp,
            ntiles: self.ntiles,
            groups: self.groups,
            word_rows: self.word_rows,
            bits: self.bits as i32,
        }
    }

    /// Bytes of scratch `quant_linear` needs for m rows.
    pub fn scratch_bytes(&self, dtype: DType, m: usize, path: LinearPath, split: usize) -> usize {
        let q = self.sizes();
        let code = dtype_code(dtype, "x").unwrap_or(0);
        // SAFETY: a pure size computation that reads only the struct's sizes and whether
        // row_src is NULL; nothing is dereferenced on the device.
        unsafe {
            ffi::paradec_quant_linear_scratch(code, &q, m, path_code(path), split.max(1) as i32)
        }
    }
}

/// Split-K counters kept zero between calls (`paradec_zeroed_counters`): u32 counters, zero
/// whenever no call runs, that a call takes its small-M split counters from instead of zeroing
/// its own (a memset or a prep launch saved). One set serves one stream's calls (the
/// workspace's).
pub fn zeroed_counters_ffi(
    counters: Option<&mut DeviceBuffer>,
    stream: &CudaStream,
) -> Option<ffi::paradec_zeroed_counters> {
    counters
        .filter(|b| b.device() == stream.device())
        .map(|b| ffi::paradec_zeroed_counters {
            count: b.len() / 4,
            counters: b.as_mut_ptr().cast(),
        })
}

/// `out[m, N] (+)= x[m, K] · Wᵀ + bias` for a quantized weight in the device layout. Twin of
/// `quant::QuantWeight::forward`. `scratch` (U8, at least `w.scratch_bytes(..)` bytes) holds the
/// gathered x and the split-K partials; `counters`, when given, are kept zero between calls
/// (see [`zeroed_counters_ffi`]).
#[allow(clippy::too_many_arguments)]
pub fn quant_linear(
    x: &Tensor,
    m: usize,
    w: &QuantWeightArgs<'_>,
    bias: Option<&Tensor>,
    out: &mut Tensor,
    accumulate: bool,
    path: LinearPath,
    split: usize,
    scratch: Option<&mut Tensor>,
    counters: Option<&mut DeviceBuffer>,
    stream: &CudaStream,
) -> Result<()> {
    let dtype = x.dtype();
    let code = dtype_code(dtype, "linear x")?;
    let mk = m
        .checked_mul(w.k)
        .ok_or_else(|| Error::bad_input(format!("linear: {m} × {} overflows", w.k)))?;
    check_tensor(x, "linear x", None, mk, stream)?;
    check_tensor(out, "linear out", Some(dtype), m * w.n, stream)?;
    if let Some(b) = bias {
        check_tensor(b, "linear bias", Some(dtype), w.n, stream)?;
    }
    let q = w.check(stream)?;
    let need = w.scratch_bytes(dtype, m, path, split);
    let (sp, sbytes) = match scratch {
        Some(t) => {
            if t.size_bytes() < need {
                return Err(Error::bad_input(format!(
                    "linear scratch: {} bytes, the kernel needs {need}",
                    t.size_bytes()
                )));
            }
            check_tensor(t, "linear scratch", None, t.numel(), stream)?;
            (dev_ptr_mut(t), t.size_bytes())
        }
        None if need > 0 => {
            return Err(Error::bad_input(format!(
                "linear scratch: none given, the kernel needs {need} bytes"
            )))
        }
        None => (ptr::null_mut(), 0),
    };
    if m == 0 {
        return Ok(());
    }
    ensure_device(stream.device())?;
    let kept = zeroed_counters_ffi(counters, stream);
    let kept_ptr = kept.as_ref().map_or(ptr::null(), |k| k as *const _);
    // SAFETY: x, out, bias and the weight's arrays are live device allocations of the checked
    // sizes and dtypes on the stream's device; scratch holds at least `need` bytes; the kept
    // counters (if any) are a live buffer of the stream's device, zero between calls. The
    // structs are read on the host during the call only.
    let status = unsafe {
        ffi::paradec_quant_linear(
            code,
            dev_ptr(x),
            m,
            &q,
            opt_ptr(bias),
            dev_ptr_mut(out),
            accumulate as i32,
            path_code(path),
            split.max(1) as i32,
            sp,
            sbytes,
            kept_ptr,
            stream.raw(),
        )
    };
    check_status(status, "paradec_quant_linear")
}

/// One call of [`quant_linear_group`]: `out (+)= x · Wᵀ + bias` on the small-M path with K split
/// `split` ways.
pub struct QuantLinearCall<'a> {
    /// `[m, K]`.
    pub x: &'a Tensor,
    /// The weight (uniform 4-bit).
    pub w: QuantWeightArgs<'a>,
    /// `[N]` or none.
    pub bias: Option<&'a Tensor>,
    /// `[m, N]`.
    pub out: &'a mut Tensor,
    /// Add into `out` instead of overwriting it.
    pub accumulate: bool,
    /// K split (≥ 1).
    pub split: usize,
    /// The small-M path's loop: `Small` (the ring loop), `SmallLean` or `SmallStream`; the
    /// group takes the stream loop when every call asks for it, else the lean loop unless a
    /// call asks for `Small`. `Wgmma` for every call: the warpgroup-MMA GEMM (`split` as
    /// [`quant_linear`]'s on that path; no activation), one grid for all where it runs.
    pub path: LinearPath,
    /// An activation applied to `x · Wᵀ + bias` in f32 before the output is rounded (an MLP's
    /// first projection), or none.
    pub act: Option<Activation>,
}

fn group_ffi(
    calls: &[QuantLinearCall<'_>],
    qs: &[ffi::paradec_qweight],
) -> Vec<ffi::paradec_qlinear_call> {
    calls
        .iter()
        .zip(qs)
        .map(|(c, q)| ffi::paradec_qlinear_call {
            x: dev_ptr(c.x),
            w: q,
            bias: opt_ptr(c.bias),
            out: ptr::null_mut(),
            accumulate: c.accumulate as i32,
            split: c.split.max(1) as i32,
            path: path_code(c.path),
            act: c.act.map_or(0, |a| 1 + super::activation::act_code(a)),
        })
        .collect()
}

/// Bytes of scratch [`quant_linear_group`] needs for these calls at m rows.
pub fn quant_linear_group_scratch(dtype: DType, m: usize, calls: &[QuantLinearCall<'_>]) -> usize {
    let qs: Vec<ffi::paradec_qweight> = calls.iter().map(|c| c.w.sizes()).collect();
    let v = group_ffi(calls, &qs);
    let code = dtype_code(dtype, "x").unwrap_or(0);
    // SAFETY: a pure size computation over the sizes in `v` (its weights' pointers point into
    // `qs`, alive here); nothing is dereferenced on the device.
    unsafe { ffi::paradec_quant_linear_group_scratch(code, m, v.as_ptr(), v.len()) }
}

/// Several quantized linears of the same m (≤ 32, uniform 4-bit weights) in two launches, each
/// result as [`quant_linear`] on the small-M path gives it (on the warpgroup-MMA path where
/// every call asks for it: any m and width, each result as that path's single call within
/// rounding — one grid plans the calls' K splits together). `scratch` (U8) holds at least
/// [`quant_linear_group_scratch`] bytes; with kept `counters` (see
/// [`super::zeroed_counters_ffi`])
/// the first launch runs only where a call gathers permuted x.
pub fn quant_linear_group(
    m: usize,
    calls: &mut [QuantLinearCall<'_>],
    scratch: Option<&mut Tensor>,
    counters: Option<&mut DeviceBuffer>,
    stream: &CudaStream,
) -> Result<()> {
    let Some(first) = calls.first() else {
        return Ok(());
    };
    let dtype = first.x.dtype();
    let code = dtype_code(dtype, "linear x")?;
    let mut qs = Vec::with_capacity(calls.len());
    for c in calls.iter() {
        check_tensor(c.x, "linear x", Some(dtype), m * c.w.k, stream)?;
        check_tensor(c.out, "linear out", Some(dtype), m * c.w.n, stream)?;
        if let Some(b) = c.bias {
            check_tensor(b, "linear bias", Some(dtype), c.w.n, stream)?;
        }
        qs.push(c.w.check(stream)?);
    }
    let need = quant_linear_group_scratch(dtype, m, calls);
    let (sp, sbytes) = match scratch {
        Some(t) if t.size_bytes() >= need => {
            check_tensor(t, "linear scratch", None, t.numel(), stream)?;
            (dev_ptr_mut(t), t.size_bytes())
        }
        _ if need == 0 => (ptr::null_mut(), 0),
        _ => {
            return Err(Error::bad_input(format!(
                "grouped linear scratch: the kernels need {need} bytes"
            )))
        }
    };
    if m == 0 {
        return Ok(());
    }
    let mut v = group_ffi(calls, &qs);
    for (f, c) in v.iter_mut().zip(calls.iter_mut()) {
        f.out = dev_ptr_mut(c.out);
    }
    ensure_device(stream.device())?;
    let kept = zeroed_counters_ffi(counters, stream);
    let kept_ptr = kept.as_ref().map_or(ptr::null(), |k| k as *const _);
    // SAFETY: every x, out, bias and weight array is a live device allocation of the checked
    // size and dtype on the stream's device; `v` and `qs` (which it points into) live through
    // the call, read on the host only; scratch holds at least `need` bytes; the kept counters
    // (if any) are a live buffer of the stream's device, zero between calls.
    let status = unsafe {
        ffi::paradec_quant_linear_group(
            code,
            m,
            v.as_ptr(),
            v.len(),
            sp,
            sbytes,
            kept_ptr,
            stream.raw(),
        )
    };
    check_status(status, "paradec_quant_linear_group")
}

/// One term of [`quant_linear_sum`]: `x · Wᵀ` with its K split.
pub struct QuantLinearTerm<'a> {
    /// `[m, K]`.
    pub x: &'a Tensor,
    /// The weight (uniform 4-bit; N as every other term's).
    pub w: QuantWeightArgs<'a>,
    /// K split (≥ 1).
    pub split: usize,
}

fn term_ffi(
    terms: &[QuantLinearTerm<'_>],
    qs: &[ffi::paradec_qweight],
) -> Vec<ffi::paradec_qlinear_term> {
    terms
        .iter()
        .zip(qs)
        .map(|(t, q)| ffi::paradec_qlinear_term {
            x: dev_ptr(t.x),
            w: q,
            split: t.split.clamp(1, 1024) as i32,
        })
        .collect()
}

/// Bytes of scratch [`quant_linear_sum`] needs for these terms at m rows.
pub fn quant_linear_sum_scratch(dtype: DType, m: usize, terms: &[QuantLinearTerm<'_>]) -> usize {
    let qs: Vec<ffi::paradec_qweight> = terms.iter().map(|t| t.w.sizes()).collect();
    let v = term_ffi(terms, &qs);
    let code = dtype_code(dtype, "x").unwrap_or(0);
    // SAFETY: a pure size computation over the sizes in `v` (its weights' pointers point into
    // `qs`, alive here); nothing is dereferenced on the device.
    unsafe { ffi::paradec_quant_linear_sum_scratch(code, m, v.as_ptr(), v.len()) }
}

/// `out[m, N] (+)= Σ x_i · W_iᵀ + bias` for quantized terms of one N (m ≤ 32, uniform 4-bit)
/// in one launch (plus one that gathers permuted x or zeroes counters): every term's K splits
/// are summed in a fixed order by the last block of each column block. `path`: `SmallLean`
/// (the lean loop where every term's x fits it, else the ring loop), `Small` (the ring loop)
/// or `Wgmma` (the warpgroup-MMA GEMM, each term's K split as alone, any m and width; the
/// terms' `split` ignored). `scratch` (U8) holds at least [`quant_linear_sum_scratch`] bytes;
/// `counters` as for [`quant_linear_group`].
#[allow(clippy::too_many_arguments)]
pub fn quant_linear_sum(
    m: usize,
    terms: &[QuantLinearTerm<'_>],
    bias: Option<&Tensor>,
    out: &mut Tensor,
    accumulate: bool,
    path: LinearPath,
    scratch: &mut Tensor,
    counters: Option<&mut DeviceBuffer>,
    stream: &CudaStream,
) -> Result<()> {
    let Some(first) = terms.first() else {
        return Err(Error::bad_input("summed linear: no terms"));
    };
    let dtype = first.x.dtype();
    let code = dtype_code(dtype, "linear x")?;
    let n = first.w.n;
    check_tensor(out, "linear out", Some(dtype), m * n, stream)?;
    if let Some(b) = bias {
        check_tensor(b, "linear bias", Some(dtype), n, stream)?;
    }
    let mut qs = Vec::with_capacity(terms.len());
    for t in terms {
        check_tensor(t.x, "linear x", Some(dtype), m * t.w.k, stream)?;
        if t.w.n != n {
            return Err(Error::bad_input(format!(
                "summed linear: a term has {} outputs, the first {n}",
                t.w.n
            )));
        }
        qs.push(t.w.check(stream)?);
    }
    let need = quant_linear_sum_scratch(dtype, m, terms);
    if scratch.size_bytes() < need {
        return Err(Error::bad_input(format!(
            "summed linear scratch: the kernels need {need} bytes, got {}",
            scratch.size_bytes()
        )));
    }
    check_tensor(scratch, "linear scratch", None, scratch.numel(), stream)?;
    if m == 0 {
        return Ok(());
    }
    let v = term_ffi(terms, &qs);
    ensure_device(stream.device())?;
    let kept = zeroed_counters_ffi(counters, stream);
    let kept_ptr = kept.as_ref().map_or(ptr::null(), |k| k as *const _);
    // SAFETY: every x, out, bias and weight array is a live device allocation of the checked
    // size and dtype on the stream's device; `v` and `qs` (which it points into) live through
    // the call, read on the host only; scratch holds at least `need` bytes; the kept counters
    // (if any) are a live buffer of the stream's device, zero between calls.
    let status = unsafe {
        ffi::paradec_quant_linear_sum(
            code,
            m,
            v.as_ptr(),
            v.len(),
            opt_ptr(bias),
            dev_ptr_mut(out),
            accumulate as i32,
            path_code(path),
            dev_ptr_mut(scratch),
            scratch.size_bytes(),
            kept_ptr,
            stream.raw(),
        )
    };
    check_status(status, "paradec_quant_linear_sum")
}

/// `out[m, n] (+)= x[m, k] · w[n, k]ᵀ + bias`, all of one dtype. Twin of `cpu::linear::linear`.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    x: &Tensor,
    m: usize,
    k: usize,
    w: &Tensor,
    n: usize,
    bias: Option<&Tensor>,
    out: &mut Tensor,
    accumulate: bool,
    path: LinearPath,
    stream: &CudaStream,
) -> Result<()> {
    let dtype = x.dtype();
    let code = dtype_code(dtype, "linear x")?;
    let bad = || Error::bad_input(format!("linear: {m} × {k} × {n} overflows"));
    check_tensor(
        x,
        "linear x",
        None,
        m.checked_mul(k).ok_or_else(bad)?,
        stream,
    )?;
    check_tensor(
        w,
        "linear weight",
        Some(dtype),
        n.checked_mul(k).ok_or_else(bad)?,
        stream,
    )?;
    check_tensor(
        out,
        "linear out",
        Some(dtype),
        m.checked_mul(n).ok_or_else(bad)?,
        stream,
    )?;
    if let Some(b) = bias {
        check_tensor(b, "linear bias", Some(dtype), n, stream)?;
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        return Err(Error::bad_input("linear: K = 0"));
    }
    ensure_device(stream.device())?;
    // SAFETY: live device allocations of the checked element counts and dtype.
    let status = unsafe {
        ffi::paradec_linear(
            code,
            dev_ptr(x),
            m,
            k,
            dev_ptr(w),
            n,
            opt_ptr(bias),
            dev_ptr_mut(out),
            accumulate as i32,
            path_code(path),
            stream.raw(),
        )
    };
    check_status(status, "paradec_linear")
}

/// Whether the vendor GEMM of `LinearPath::Vendor` (cuBLASLt, loaded at run time on first use)
/// is available; where it is not, that path runs paradec's own GEMM.
pub fn vendor_gemm_available() -> bool {
    // SAFETY: takes no arguments; the launcher catches every C++ exception.
    unsafe { ffi::paradec_vendor_gemm_available() != 0 }
}

/// Whether `LinearPath::Wgmma` runs its wgmma kernel on the current device (a build with sm_90a
/// code, a device of compute capability 9.0) for the weights it takes (one width for every
/// tile); where it does not, that path runs the mma.sync tiles.
pub fn wgmma_available() -> bool {
    // SAFETY: takes no arguments; the launcher catches every C++ exception.
    unsafe { ffi::paradec_wgmma_available() != 0 }
}

/// How the small-M path's lean loop sums its K splits (`set_split_sum`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitSum {
    /// As the environment's `PARADEC_SPLIT_SUM` says (`global`, `cluster`, `resident`, `auto`;
    /// unset is `Auto`).
    Env,
    /// Every split leaves f32 partials in the scratch; the last block of a column block to
    /// finish sums them.
    Global,
    /// The splits of a column block run as one thread-block cluster and sum through shared
    /// memory (compute capability 9.0 and later, 2 … 16 splits; elsewhere `Global`).
    Cluster,
    /// `Cluster` where the device holds every cluster of the launch at once, else `Global`.
    Resident,
    /// The default: `Resident` for 8 rows or more, `Global` below (measured on an H100:
    /// docs/gpu-bench-linear-h200.md).
    Auto,
}

/// Sets how the lean loop sums its K splits, for the whole process (a test and bench hook:
/// every way gives the same bits); returns the previous setting.
pub fn set_split_sum(mode: SplitSum) -> SplitSum {
    let code = match mode {
        SplitSum::Env => 0,
        SplitSum::Global => 1,
        SplitSum::Cluster => 2,
        SplitSum::Resident => 3,
        SplitSum::Auto => 4,
    };
    // SAFETY: takes an integer the function range-checks; it touches no device.
    match unsafe { ffi::paradec_set_split_sum(code) } {
        1 => SplitSum::Global,
        2 => SplitSum::Cluster,
        3 => SplitSum::Resident,
        4 => SplitSum::Auto,
        _ => SplitSum::Env,
    }
}

/// How many lean launches the calling thread has summed inside clusters so far (a test hook:
/// whether a `SplitSum` mode took clusters).
pub fn cluster_sum_launches() -> u64 {
    // SAFETY: reads a thread-local counter; no arguments, no device.
    unsafe { ffi::paradec_cluster_sum_launches() }
}

/// Whether this build holds the wgmma kernels' sm_90a code: `LinearPath::Wgmma` runs them on
/// devices of compute capability 9.0.
pub fn wgmma_built() -> bool {
    // SAFETY: takes no arguments and touches no device.
    unsafe { ffi::paradec_wgmma_built() != 0 }
}

/// `x *= factor`. Twin of the CPU arm of `ops::scale_inplace`.
pub fn scale_inplace(x: &mut Tensor, factor: f32, stream: &CudaStream) -> Result<()> {
    let code = dtype_code(x.dtype(), "scale_inplace x")?;
    let n = x.numel();
    check_tensor(x, "scale_inplace x", None, n, stream)?;
    if n == 0 {
        return Ok(());
    }
    ensure_device(stream.device())?;
    // SAFETY: a live device allocation of n elements of the given dtype.
    let status =
        unsafe { ffi::paradec_scale_inplace(code, dev_ptr_mut(x), n, factor, stream.raw()) };
    check_status(status, "paradec_scale_inplace")
}

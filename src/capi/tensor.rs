//! Tensor descriptors laid out exactly as DLPack's `DLTensor` (a test checks field by field),
//! and their validation into borrowed views of the caller's memory.

use std::ffi::c_void;

use half::{bf16, f16};

use super::paradec_status::*;
use super::{cerr, CResult};
use crate::tensor::DType;
use crate::Device;

/// DLPack `kDLCPU`: ordinary host memory.
pub const PARADEC_DEVICE_CPU: i32 = 1;
/// DLPack `kDLCUDA`: CUDA device memory.
pub const PARADEC_DEVICE_CUDA: i32 = 2;
/// DLPack `kDLCUDAHost`: pinned host memory (runs the host path).
pub const PARADEC_DEVICE_CUDA_HOST: i32 = 3;
/// DLPack `kDLCUDAManaged`: CUDA managed memory (runs the CUDA path).
pub const PARADEC_DEVICE_CUDA_MANAGED: i32 = 13;

/// DLPack `kDLInt`.
pub const PARADEC_DTYPE_INT: u8 = 0;
/// DLPack `kDLUInt`.
pub const PARADEC_DTYPE_UINT: u8 = 1;
/// DLPack `kDLFloat`.
pub const PARADEC_DTYPE_FLOAT: u8 = 2;
/// DLPack `kDLBfloat`.
pub const PARADEC_DTYPE_BFLOAT: u8 = 4;

/// Where a tensor lives; the same layout as DLPack's `DLDevice`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct paradec_device {
    /// `PARADEC_DEVICE_CPU`, `PARADEC_DEVICE_CUDA`, … (DLPack's `DLDeviceType` numbers).
    pub device_type: i32,
    /// The device ordinal (0 for the host).
    pub device_id: i32,
}

/// An element type; the same layout as DLPack's `DLDataType`. paradec takes lanes = 1 and
/// {FLOAT, 32}, {FLOAT, 16}, {BFLOAT, 16}, {INT, 8/16/32/64}, {UINT, 8}.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct paradec_dtype {
    /// `PARADEC_DTYPE_INT`, `PARADEC_DTYPE_UINT`, `PARADEC_DTYPE_FLOAT`, `PARADEC_DTYPE_BFLOAT`.
    pub code: u8,
    /// Bits per element.
    pub bits: u8,
    /// Vector lanes: always 1 here.
    pub lanes: u16,
}

/// A tensor the caller owns, described exactly as DLPack's `DLTensor` (same fields, same
/// order, same types), so a `DLTensor *` may be passed where a `const paradec_tensor *` is
/// expected. paradec reads the descriptor during the call and never keeps it; the memory it
/// describes is used in place (never copied) and must stay valid until the work is done — for
/// CUDA tensors, until the work queued on the stream has run.
///
/// Rules every call checks: `strides` is NULL or compact row-major (dimensions of size 1 may
/// carry any stride); `data + byte_offset` is aligned to the element size; every float tensor
/// of one call has the same dtype unless the call says otherwise; all tensors of one call are
/// on one device.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct paradec_tensor {
    /// Start of the allocation (host or device pointer, by `device`).
    pub data: *mut c_void,
    /// Where `data` lives.
    pub device: paradec_device,
    /// Number of dimensions (0 to 16).
    pub ndim: i32,
    /// The element type.
    pub dtype: paradec_dtype,
    /// `ndim` sizes.
    pub shape: *mut i64,
    /// NULL (compact row-major) or `ndim` strides in elements.
    pub strides: *mut i64,
    /// Bytes from `data` to the first element.
    pub byte_offset: u64,
}

/// Where a validated tensor lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loc {
    Host,
    Cuda(usize),
}

impl Loc {
    pub(crate) fn device(self) -> Device {
        match self {
            Loc::Host => Device::Cpu,
            Loc::Cuda(i) => Device::Cuda(i),
        }
    }
}

/// A validated descriptor: a borrowed view of the caller's memory.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub(crate) name: String,
    pub(crate) ptr: *mut u8,
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<usize>,
    pub(crate) numel: usize,
    pub(crate) loc: Loc,
}

pub(crate) fn dtype_of(d: paradec_dtype, name: &str) -> CResult<DType> {
    let dt = match (d.code, d.bits, d.lanes) {
        (PARADEC_DTYPE_FLOAT, 32, 1) => DType::F32,
        (PARADEC_DTYPE_FLOAT, 16, 1) => DType::F16,
        (PARADEC_DTYPE_BFLOAT, 16, 1) => DType::BF16,
        (PARADEC_DTYPE_INT, 8, 1) => DType::I8,
        (PARADEC_DTYPE_INT, 16, 1) => DType::I16,
        (PARADEC_DTYPE_INT, 32, 1) => DType::I32,
        (PARADEC_DTYPE_INT, 64, 1) => DType::I64,
        (PARADEC_DTYPE_UINT, 8, 1) => DType::U8,
        (c, b, l) => {
            return Err(cerr(
                PARADEC_ERR_DTYPE,
                format!(
                    "{name}: dtype {{code {c}, bits {b}, lanes {l}}} is not one paradec takes (f32, f16, bf16, i8/16/32/64, u8; lanes 1)"
                ),
            ))
        }
    };
    Ok(dt)
}

pub(crate) fn device_of(d: paradec_device, name: &str) -> CResult<Loc> {
    match d.device_type {
        PARADEC_DEVICE_CPU | PARADEC_DEVICE_CUDA_HOST => Ok(Loc::Host),
        PARADEC_DEVICE_CUDA | PARADEC_DEVICE_CUDA_MANAGED => {
            let id = usize::try_from(d.device_id).map_err(|_| {
                cerr(
                    PARADEC_ERR_DEVICE,
                    format!("{name}: CUDA device id {} is negative", d.device_id),
                )
            })?;
            Ok(Loc::Cuda(id))
        }
        other => Err(cerr(
            PARADEC_ERR_DEVICE,
            format!(
                "{name}: device type {other} is not one paradec runs on (1 = CPU, 2 = CUDA, 3 = CUDA host, 13 = CUDA managed)"
            ),
        )),
    }
}

/// The most dimensions a descriptor may have.
const MAX_NDIM: i32 = 16;

/// Validates a required descriptor into a view.
pub(crate) fn view(t: *const paradec_tensor, name: &str) -> CResult<View> {
    let t = super::req(t, name)?;
    view_of(t, name)
}

/// Validates an optional descriptor (NULL = absent).
pub(crate) fn opt_view(t: *const paradec_tensor, name: &str) -> CResult<Option<View>> {
    if t.is_null() {
        Ok(None)
    } else {
        view(t, name).map(Some)
    }
}

pub(crate) fn view_of(t: &paradec_tensor, name: &str) -> CResult<View> {
    if !(0..=MAX_NDIM).contains(&t.ndim) {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            format!("{name}: ndim {} is not in 0..={MAX_NDIM}", t.ndim),
        ));
    }
    let ndim = t.ndim as usize;
    let dims = super::slice_arg(t.shape as *const i64, ndim, &format!("{name}.shape"))?;
    let mut shape = Vec::with_capacity(ndim);
    for (i, &d) in dims.iter().enumerate() {
        let d = usize::try_from(d).map_err(|_| {
            cerr(
                PARADEC_ERR_SHAPE,
                format!("{name}: shape[{i}] = {d} is negative"),
            )
        })?;
        shape.push(d);
    }
    let dtype = dtype_of(t.dtype, name)?;
    let loc = device_of(t.device, name)?;
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .filter(|n| n.checked_mul(dtype.size()).is_some())
        .ok_or_else(|| {
            cerr(
                PARADEC_ERR_SHAPE,
                format!("{name}: shape {shape:?} overflows"),
            )
        })?;
    if !t.strides.is_null() {
        let strides = super::slice_arg(t.strides as *const i64, ndim, &format!("{name}.strides"))?;
        let mut want: i64 = 1;
        for i in (0..ndim).rev() {
            if shape[i] != 1 && strides[i] != want {
                return Err(cerr(
                    PARADEC_ERR_NOT_CONTIGUOUS,
                    format!(
                        "{name}: strides {strides:?} are not compact row-major for shape {shape:?} (dimension {i} needs stride {want}); pass a contiguous tensor or NULL strides"
                    ),
                ));
            }
            want = want.saturating_mul(shape[i] as i64);
        }
    }
    let offset = usize::try_from(t.byte_offset).map_err(|_| {
        cerr(
            PARADEC_ERR_INVALID_ARGUMENT,
            format!("{name}: byte_offset {} overflows", t.byte_offset),
        )
    })?;
    if t.data.is_null() && numel > 0 {
        return Err(cerr(
            PARADEC_ERR_NULL_ARGUMENT,
            format!("{name}: data is NULL"),
        ));
    }
    let ptr = (t.data as *mut u8).wrapping_add(offset);
    if numel > 0 && !(ptr as usize).is_multiple_of(dtype.size()) {
        return Err(cerr(
            PARADEC_ERR_INVALID_ARGUMENT,
            format!(
                "{name}: data + byte_offset is not aligned to its {}-byte elements",
                dtype.size()
            ),
        ));
    }
    Ok(View {
        name: name.to_string(),
        ptr,
        dtype,
        shape,
        numel,
        loc,
    })
}

/// The f32 values of a float view, widened from f16/bf16 where needed.
pub(crate) enum Floats<'a> {
    Borrowed(&'a [f32]),
    Owned(Vec<f32>),
}

impl std::ops::Deref for Floats<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Floats::Borrowed(s) => s,
            Floats::Owned(v) => v,
        }
    }
}

impl View {
    pub(crate) fn bytes(&self) -> usize {
        self.numel * self.dtype.size()
    }

    fn range(&self) -> std::ops::Range<usize> {
        let s = self.ptr as usize;
        s..s + self.bytes()
    }

    /// True when the two views share any byte.
    pub(crate) fn overlaps(&self, other: &View) -> bool {
        let (a, b) = (self.range(), other.range());
        !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
    }

    pub(crate) fn is_float(&self) -> bool {
        self.dtype.is_float()
    }

    /// The elements as a typed slice. Callers checked the dtype's size matches `T`.
    ///
    /// # Safety
    /// The view must be of host memory, valid for reads for the call, and not written through
    /// any other reference while the slice lives.
    unsafe fn slice<'a, T>(&self) -> &'a [T] {
        if self.numel == 0 {
            return &[];
        }
        // SAFETY: the caller's descriptor promises `numel` elements at `ptr` (non-NULL and
        // aligned, checked in `view_of`); the function contract covers validity and aliasing.
        unsafe { std::slice::from_raw_parts(self.ptr as *const T, self.numel) }
    }

    /// # Safety
    /// As [`View::slice`], and no other reference to these bytes may exist while it lives.
    unsafe fn slice_mut<'a, T>(&self) -> &'a mut [T] {
        if self.numel == 0 {
            return &mut [];
        }
        // SAFETY: as in `slice`; exclusivity is the function contract (callers reject outputs
        // that overlap other outputs and copy inputs that overlap an output).
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut T, self.numel) }
    }

    /// The values of a host float tensor as f32. Borrowed when f32 and not overlapping any of
    /// `outputs` (an input that overlaps an output is read into a copy first, so an op may
    /// write its output over its input).
    pub(crate) fn floats<'a>(&self, outputs: &[&View]) -> Floats<'a> {
        let aliased = outputs.iter().any(|o| o.overlaps(self));
        // SAFETY: host view (callers dispatch on `loc`), float dtype (checked by callers); the
        // borrowed slice is only taken when no output of the call overlaps it.
        unsafe {
            match self.dtype {
                DType::F32 if !aliased => Floats::Borrowed(self.slice::<f32>()),
                DType::F32 => Floats::Owned(self.slice::<f32>().to_vec()),
                DType::F16 => {
                    Floats::Owned(self.slice::<f16>().iter().map(|x| x.to_f32()).collect())
                }
                DType::BF16 => {
                    Floats::Owned(self.slice::<bf16>().iter().map(|x| x.to_f32()).collect())
                }
                _ => Floats::Owned(Vec::new()),
            }
        }
    }

    /// Runs `f` on the f32 values of a host float output and stores them back (in place for
    /// f32; f16/bf16 are widened, computed on and rounded back).
    pub(crate) fn with_floats_mut<R>(&self, f: impl FnOnce(&mut [f32]) -> R) -> R {
        // SAFETY: host view of a float dtype (checked by callers), and the callers guarantee no
        // other live reference overlaps it (outputs are checked pairwise, inputs copied).
        unsafe {
            match self.dtype {
                DType::F16 => {
                    let s = self.slice_mut::<f16>();
                    let mut v: Vec<f32> = s.iter().map(|x| x.to_f32()).collect();
                    let r = f(&mut v);
                    s.iter_mut()
                        .zip(&v)
                        .for_each(|(d, &x)| *d = f16::from_f32(x));
                    r
                }
                DType::BF16 => {
                    let s = self.slice_mut::<bf16>();
                    let mut v: Vec<f32> = s.iter().map(|x| x.to_f32()).collect();
                    let r = f(&mut v);
                    s.iter_mut()
                        .zip(&v)
                        .for_each(|(d, &x)| *d = bf16::from_f32(x));
                    r
                }
                _ => f(self.slice_mut::<f32>()),
            }
        }
    }

    /// Writes f32 values into a host float tensor of the same element count.
    pub(crate) fn store_floats(&self, values: &[f32]) {
        self.with_floats_mut(|o| o.copy_from_slice(&values[..o.len()]));
    }

    /// The values of a host integer tensor (i32, i64, u32) as i64.
    pub(crate) fn ints(&self) -> Vec<i64> {
        // SAFETY: host view; the dtype picks the element type, whose size matches.
        unsafe {
            match self.dtype {
                DType::I64 => self.slice::<i64>().to_vec(),
                DType::I32 => self.slice::<i32>().iter().map(|&x| x as i64).collect(),
                DType::I16 => self.slice::<i16>().iter().map(|&x| x as i64).collect(),
                DType::I8 => self.slice::<i8>().iter().map(|&x| x as i64).collect(),
                DType::U8 => self.slice::<u8>().iter().map(|&x| x as i64).collect(),
                _ => Vec::new(),
            }
        }
    }

    /// The elements of a host view as `T` (its dtype must be `T`'s; a dtype error otherwise).
    /// The caller guarantees that no output of the call overlaps it while the slice lives.
    pub(crate) fn host_typed<'a, T: HostElem>(&self) -> CResult<&'a [T]> {
        self.typed_ok::<T>()?;
        // SAFETY: a host view (checked above) whose dtype is T's, valid for `numel` reads (the
        // descriptor contract); callers keep outputs off it (`disjoint`) while it lives.
        Ok(unsafe { self.slice::<T>() })
    }

    /// The elements of a host view as `T`, writable. The caller guarantees that no other
    /// reference to these bytes lives while the slice does (outputs checked with `disjoint`).
    pub(crate) fn host_typed_mut<'a, T: HostElem>(&self) -> CResult<&'a mut [T]> {
        self.typed_ok::<T>()?;
        // SAFETY: as in `host_typed`; exclusivity is the caller's guarantee (the call's
        // outputs are pairwise disjoint, and its inputs are read elsewhere or copied).
        Ok(unsafe { self.slice_mut::<T>() })
    }

    fn typed_ok<T: HostElem>(&self) -> CResult<()> {
        if self.loc != Loc::Host {
            return Err(cerr(
                PARADEC_ERR_DEVICE,
                format!("{}: expected host memory", self.name),
            ));
        }
        want_dtype(self, T::DTYPE)
    }

    /// The raw little-endian bytes of a host tensor (for copying into weights).
    pub(crate) fn host_bytes<'a>(&self) -> &'a [u8] {
        // SAFETY: host view valid for `bytes()` bytes, only read.
        unsafe { self.slice_bytes() }
    }

    /// # Safety
    /// Host view valid for reads of `bytes()` bytes.
    unsafe fn slice_bytes<'a>(&self) -> &'a [u8] {
        if self.numel == 0 {
            return &[];
        }
        // SAFETY: as in `slice`, at byte granularity.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.bytes()) }
    }
}

/// Element types a host view can be read as in place.
pub(crate) trait HostElem: Copy {
    /// The dtype of the element.
    const DTYPE: DType;
}

impl HostElem for u8 {
    const DTYPE: DType = DType::U8;
}

impl HostElem for f16 {
    const DTYPE: DType = DType::F16;
}

impl HostElem for f32 {
    const DTYPE: DType = DType::F32;
}

/// Rejects a view whose dtype is not a float type.
pub(crate) fn want_float(v: &View) -> CResult<()> {
    if !v.is_float() {
        return Err(cerr(
            PARADEC_ERR_DTYPE,
            format!("{}: expected f32, f16 or bf16, got {}", v.name, v.dtype),
        ));
    }
    Ok(())
}

/// Rejects a view whose dtype differs from `dtype`.
pub(crate) fn want_dtype(v: &View, dtype: DType) -> CResult<()> {
    if v.dtype != dtype {
        return Err(cerr(
            PARADEC_ERR_DTYPE,
            format!("{}: expected {dtype}, got {}", v.name, v.dtype),
        ));
    }
    Ok(())
}

/// Rejects a view whose shape differs from `shape`.
pub(crate) fn want_shape(v: &View, shape: &[usize]) -> CResult<()> {
    if v.shape != shape {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            format!("{}: expected shape {shape:?}, got {:?}", v.name, v.shape),
        ));
    }
    Ok(())
}

/// Rejects a view whose rank differs from `ndim`.
pub(crate) fn want_ndim(v: &View, ndim: usize, what: &str) -> CResult<()> {
    if v.shape.len() != ndim {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            format!("{}: expected {what}, got shape {:?}", v.name, v.shape),
        ));
    }
    Ok(())
}

/// The one device of a call's tensors, or `PARADEC_ERR_DEVICE` naming the odd one.
pub(crate) fn one_device(views: &[&View]) -> CResult<Loc> {
    let first = views[0];
    for v in views {
        if v.loc != first.loc {
            return Err(cerr(
                PARADEC_ERR_DEVICE,
                format!(
                    "{} is on {} but {} is on {}",
                    v.name,
                    v.loc.device(),
                    first.name,
                    first.loc.device()
                ),
            ));
        }
    }
    Ok(first.loc)
}

/// Rejects outputs (written by the call) that share memory with each other.
pub(crate) fn disjoint(outputs: &[&View]) -> CResult<()> {
    for (i, a) in outputs.iter().enumerate() {
        for b in &outputs[i + 1..] {
            if a.overlaps(b) {
                return Err(cerr(
                    PARADEC_ERR_INVALID_ARGUMENT,
                    format!(
                        "{} and {} overlap; outputs must not share memory",
                        a.name, b.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A `paradec_device` as a crate device.
pub(crate) fn device_arg(d: paradec_device, name: &str) -> CResult<Device> {
    Ok(device_of(d, name)?.device())
}

/// The descriptor dtype of a crate dtype.
pub(crate) fn dtype_desc(dtype: DType) -> paradec_dtype {
    let (code, bits) = match dtype {
        DType::F32 => (PARADEC_DTYPE_FLOAT, 32),
        DType::F16 => (PARADEC_DTYPE_FLOAT, 16),
        DType::BF16 => (PARADEC_DTYPE_BFLOAT, 16),
        DType::I8 => (PARADEC_DTYPE_INT, 8),
        DType::I16 => (PARADEC_DTYPE_INT, 16),
        DType::I32 => (PARADEC_DTYPE_INT, 32),
        DType::I64 => (PARADEC_DTYPE_INT, 64),
        DType::U8 => (PARADEC_DTYPE_UINT, 8),
    };
    paradec_dtype {
        code,
        bits,
        lanes: 1,
    }
}

/// The descriptor device of a crate device.
pub(crate) fn device_desc(device: Device) -> paradec_device {
    match device {
        Device::Cpu => paradec_device {
            device_type: PARADEC_DEVICE_CPU,
            device_id: 0,
        },
        Device::Cuda(i) => paradec_device {
            device_type: PARADEC_DEVICE_CUDA,
            device_id: i as i32,
        },
    }
}

/// Writes a descriptor of `shape` (pointing into `shape_store`) for memory paradec owns.
pub(crate) fn describe(
    data: *mut c_void,
    dtype: DType,
    device: Device,
    shape_store: &[i64],
) -> paradec_tensor {
    paradec_tensor {
        data,
        device: device_desc(device),
        ndim: shape_store.len() as i32,
        dtype: dtype_desc(dtype),
        shape: shape_store.as_ptr() as *mut i64,
        strides: std::ptr::null_mut(),
        byte_offset: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    // DLPack's definitions, transcribed from dlpack.h (v0.8 – v1.x: unchanged since v0.6).
    #[repr(C)]
    struct DLDevice {
        device_type: i32, // enum DLDeviceType: an int-sized C enum
        device_id: i32,
    }
    #[repr(C)]
    struct DLDataType {
        code: u8,
        bits: u8,
        lanes: u16,
    }
    #[repr(C)]
    struct DLTensor {
        data: *mut c_void,
        device: DLDevice,
        ndim: i32,
        dtype: DLDataType,
        shape: *mut i64,
        strides: *mut i64,
        byte_offset: u64,
    }

    #[test]
    fn layout_equals_dlpack() {
        assert_eq!(size_of::<paradec_tensor>(), size_of::<DLTensor>());
        assert_eq!(size_of::<paradec_device>(), size_of::<DLDevice>());
        assert_eq!(size_of::<paradec_dtype>(), size_of::<DLDataType>());
        macro_rules! same {
            ($a:ty, $b:ty, $($f:ident),+) => {$(
                assert_eq!(offset_of!($a, $f), offset_of!($b, $f), stringify!($f));
            )+};
        }
        same!(
            paradec_tensor,
            DLTensor,
            data,
            device,
            ndim,
            dtype,
            shape,
            strides,
            byte_offset
        );
        same!(paradec_device, DLDevice, device_type, device_id);
        same!(paradec_dtype, DLDataType, code, bits, lanes);
    }

    #[test]
    fn strides_and_alignment_are_checked() {
        let mut data = [0f32; 6];
        let mut shape = [2i64, 3];
        let mut strides = [3i64, 1];
        let mut t = paradec_tensor {
            data: data.as_mut_ptr().cast(),
            device: paradec_device {
                device_type: PARADEC_DEVICE_CPU,
                device_id: 0,
            },
            ndim: 2,
            dtype: paradec_dtype {
                code: PARADEC_DTYPE_FLOAT,
                bits: 32,
                lanes: 1,
            },
            shape: shape.as_mut_ptr(),
            strides: strides.as_mut_ptr(),
            byte_offset: 0,
        };
        assert!(view_of(&t, "x").is_ok());
        strides = [1, 2];
        t.strides = strides.as_mut_ptr();
        assert_eq!(
            view_of(&t, "x").unwrap_err().status,
            PARADEC_ERR_NOT_CONTIGUOUS
        );
        t.strides = std::ptr::null_mut();
        t.byte_offset = 2;
        assert_eq!(
            view_of(&t, "x").unwrap_err().status,
            PARADEC_ERR_INVALID_ARGUMENT
        );
    }
}

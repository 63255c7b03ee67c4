//! Tensors: a dtype, a row-major contiguous shape, and storage in host memory or on a device.

use std::borrow::Cow;

use half::{bf16, f16};

use crate::limits::try_collect;
use crate::{Error, Result};

/// Where a tensor's storage lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory.
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(usize),
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Element types: the float types activations and weights use, and the integer types that
/// packed quantized weights, indices and token ids need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// f32.
    F32,
    /// i8.
    I8,
    /// u8.
    U8,
    /// i16.
    I16,
    /// i32.
    I32,
    /// i64.
    I64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 => 1,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::I64 => 8,
        }
    }
    /// Whether the type is f16, bf16 or f32.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32)
    }
    /// The short name (`f16`, `bf16`, `i32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Host storage, typed so that slices are always correctly aligned.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    /// f16 values.
    F16(Vec<f16>),
    /// bf16 values.
    BF16(Vec<bf16>),
    /// f32 values.
    F32(Vec<f32>),
    /// i8 values.
    I8(Vec<i8>),
    /// u8 values.
    U8(Vec<u8>),
    /// i16 values.
    I16(Vec<i16>),
    /// i32 values.
    I32(Vec<i32>),
    /// i64 values.
    I64(Vec<i64>),
}

impl HostData {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            HostData::F16(_) => DType::F16,
            HostData::BF16(_) => DType::BF16,
            HostData::F32(_) => DType::F32,
            HostData::I8(_) => DType::I8,
            HostData::U8(_) => DType::U8,
            HostData::I16(_) => DType::I16,
            HostData::I32(_) => DType::I32,
            HostData::I64(_) => DType::I64,
        }
    }
    /// Elements held.
    pub fn len(&self) -> usize {
        match self {
            HostData::F16(v) => v.len(),
            HostData::BF16(v) => v.len(),
            HostData::F32(v) => v.len(),
            HostData::I8(v) => v.len(),
            HostData::U8(v) => v.len(),
            HostData::I16(v) => v.len(),
            HostData::I32(v) => v.len(),
            HostData::I64(v) => v.len(),
        }
    }
    /// Whether no element is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `n` zeros of `dtype`; an allocation the host cannot make is `Error::OutOfMemory`, not
    /// an abort.
    pub fn zeros(dtype: DType, n: usize) -> Result<Self> {
        fn filled<T: Clone>(v: T, n: usize, dtype: DType) -> Result<Vec<T>> {
            let mut x = Vec::new();
            x.try_reserve_exact(n)
                .map_err(|_| Error::OutOfMemory(format!("host: {n} elements of {dtype}")))?;
            x.resize(n, v);
            Ok(x)
        }
        Ok(match dtype {
            DType::F16 => HostData::F16(filled(f16::ZERO, n, dtype)?),
            DType::BF16 => HostData::BF16(filled(bf16::ZERO, n, dtype)?),
            DType::F32 => HostData::F32(filled(0.0, n, dtype)?),
            DType::I8 => HostData::I8(filled(0, n, dtype)?),
            DType::U8 => HostData::U8(filled(0, n, dtype)?),
            DType::I16 => HostData::I16(filled(0, n, dtype)?),
            DType::I32 => HostData::I32(filled(0, n, dtype)?),
            DType::I64 => HostData::I64(filled(0, n, dtype)?),
        })
    }
    /// Decodes little-endian bytes of `dtype` (as stored in safetensors files).
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Result<Self> {
        let size = dtype.size();
        if !bytes.len().is_multiple_of(size) {
            return Err(Error::bad_format(format!(
                "{} bytes is not a whole number of {dtype} elements",
                bytes.len()
            )));
        }
        let chunks = bytes.chunks_exact(size);
        let what = format!("decoding {dtype}");
        let w = what.as_str();
        Ok(match dtype {
            DType::F16 => HostData::F16(try_collect(
                chunks.map(|c| f16::from_le_bytes([c[0], c[1]])),
                w,
            )?),
            DType::BF16 => HostData::BF16(try_collect(
                chunks.map(|c| bf16::from_le_bytes([c[0], c[1]])),
                w,
            )?),
            DType::F32 => HostData::F32(try_collect(
                chunks.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                w,
            )?),
            DType::I8 => HostData::I8(try_collect(bytes.iter().map(|&b| b as i8), w)?),
            DType::U8 => HostData::U8(try_collect(bytes.iter().copied(), w)?),
            DType::I16 => HostData::I16(try_collect(
                chunks.map(|c| i16::from_le_bytes([c[0], c[1]])),
                w,
            )?),
            DType::I32 => HostData::I32(try_collect(
                chunks.map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                w,
            )?),
            DType::I64 => HostData::I64(try_collect(
                chunks
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
                w,
            )?),
        })
    }
    /// Little-endian bytes of the elements (for device uploads and file writes).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            HostData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostData::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostData::I8(v) => v.iter().map(|&x| x as u8).collect(),
            HostData::U8(v) => v.clone(),
            HostData::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// Storage of a tensor: host memory, or (with the `cuda` feature) a device buffer.
#[derive(Debug)]
pub enum Storage {
    /// Host memory.
    Host(HostData),
    #[cfg(feature = "cuda")]
    /// A CUDA device buffer.
    Cuda(crate::cuda::DeviceBuffer),
}

/// A dense, row-major, contiguous tensor.
#[derive(Debug)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    storage: Storage,
}

pub(crate) fn shape_str(shape: &[usize]) -> String {
    format!("{shape:?}")
}

impl Tensor {
    /// Wraps host data; `shape` must account for every element.
    pub fn from_host(data: HostData, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::bad_input(format!(
                "shape {} needs {n} elements, data has {}",
                shape_str(shape),
                data.len()
            )));
        }
        Ok(Tensor {
            dtype: data.dtype(),
            shape: shape.to_vec(),
            storage: Storage::Host(data),
        })
    }
    /// A host f32 tensor; `shape` must account for every value.
    pub fn from_f32(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        Self::from_host(HostData::F32(data), shape)
    }
    /// A host tensor of `dtype` converted from f32 values (rounding to nearest).
    pub fn from_f32_as(data: &[f32], shape: &[usize], dtype: DType) -> Result<Self> {
        let host = match dtype {
            DType::F32 => HostData::F32(data.to_vec()),
            DType::F16 => HostData::F16(data.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::BF16 => HostData::BF16(data.iter().map(|&x| bf16::from_f32(x)).collect()),
            other => {
                return Err(Error::bad_input(format!(
                    "cannot build a {other} tensor from floats"
                )))
            }
        };
        Self::from_host(host, shape)
    }
    /// Wraps a device buffer holding exactly `shape`'s elements of `dtype` (row-major).
    #[cfg(feature = "cuda")]
    pub fn from_device_buffer(
        buf: crate::cuda::DeviceBuffer,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Self> {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        if bytes != buf.len() {
            return Err(Error::bad_input(format!(
                "shape {} of {dtype} needs {bytes} bytes, the device buffer has {}",
                shape_str(shape),
                buf.len()
            )));
        }
        Ok(Tensor {
            dtype,
            shape: shape.to_vec(),
            storage: Storage::Cuda(buf),
        })
    }
    /// A zero-filled tensor, allocated directly where it lives.
    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<Self> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .filter(|n| n.checked_mul(dtype.size()).is_some())
            .ok_or_else(|| Error::bad_input(format!("shape {} overflows", shape_str(shape))))?;
        let storage = match device {
            Device::Cpu => Storage::Host(HostData::zeros(dtype, n)?),
            #[cfg(feature = "cuda")]
            Device::Cuda(ord) => {
                Storage::Cuda(crate::cuda::DeviceBuffer::zeroed(ord, n * dtype.size())?)
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => {
                return Err(Error::NoDevice(
                    "paradec was built without the `cuda` feature".into(),
                ))
            }
        };
        Ok(Tensor {
            dtype,
            shape: shape.to_vec(),
            storage,
        })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The shape, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Bytes of the elements.
    pub fn size_bytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
    /// Where the storage lives.
    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Host(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(b) => Device::Cuda(b.device()),
        }
    }
    /// The storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    /// The storage, mutably.
    pub fn storage_mut(&mut self) -> &mut Storage {
        &mut self.storage
    }
    /// Number of rows when viewed as a matrix [rows, last_dim].
    pub fn rows(&self) -> usize {
        match self.shape.last() {
            Some(&c) if c > 0 => self.numel() / c,
            _ => 0,
        }
    }
    /// The last dimension (1 for a scalar).
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Reinterprets the shape; the element count must stay the same.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(Error::bad_input(format!(
                "cannot reshape {} into {}",
                shape_str(&self.shape),
                shape_str(shape)
            )));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// The host data (an error for a device tensor).
    pub fn host(&self) -> Result<&HostData> {
        match &self.storage {
            Storage::Host(h) => Ok(h),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => Err(Error::bad_input("tensor is on a CUDA device, not the host")),
        }
    }
    /// The host data, mutably (an error for a device tensor).
    pub fn host_mut(&mut self) -> Result<&mut HostData> {
        match &mut self.storage {
            Storage::Host(h) => Ok(h),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => Err(Error::bad_input("tensor is on a CUDA device, not the host")),
        }
    }

    /// The values of a host f32 tensor.
    pub fn as_f32(&self) -> Result<&[f32]> {
        match self.host()? {
            HostData::F32(v) => Ok(v),
            other => Err(Error::bad_input(format!(
                "expected f32, got {}",
                other.dtype()
            ))),
        }
    }
    /// The values of a host f32 tensor, mutably.
    pub fn as_f32_mut(&mut self) -> Result<&mut [f32]> {
        match self.host_mut()? {
            HostData::F32(v) => Ok(v),
            other => Err(Error::bad_input(format!(
                "expected f32, got {}",
                other.dtype()
            ))),
        }
    }
    /// The values of a host i32 tensor.
    pub fn as_i32(&self) -> Result<&[i32]> {
        match self.host()? {
            HostData::I32(v) => Ok(v),
            other => Err(Error::bad_input(format!(
                "expected i32, got {}",
                other.dtype()
            ))),
        }
    }
    /// The values of a host i64 tensor.
    pub fn as_i64(&self) -> Result<&[i64]> {
        match self.host()? {
            HostData::I64(v) => Ok(v),
            other => Err(Error::bad_input(format!(
                "expected i64, got {}",
                other.dtype()
            ))),
        }
    }

    /// The values as f32 — borrowed for f32 host tensors, converted for f16/bf16.
    pub fn f32_values(&self) -> Result<Cow<'_, [f32]>> {
        Ok(match self.host()? {
            HostData::F32(v) => Cow::Borrowed(v.as_slice()),
            HostData::F16(v) => Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
            HostData::BF16(v) => Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
            other => {
                return Err(Error::bad_input(format!(
                    "expected a float tensor, got {}",
                    other.dtype()
                )))
            }
        })
    }
    /// Overwrites every element from f32 values, rounding to the tensor's dtype (a device
    /// tensor keeps its memory, so what holds its address — a captured graph — reads the new
    /// values; the copy is synchronous).
    pub fn set_f32_values(&mut self, values: &[f32]) -> Result<()> {
        if values.len() != self.numel() {
            return Err(Error::bad_input(format!(
                "writing {} values into a tensor of shape {}",
                values.len(),
                shape_str(&self.shape)
            )));
        }
        #[cfg(feature = "cuda")]
        if let Storage::Cuda(b) = &mut self.storage {
            let host = Tensor::from_f32_as(values, &self.shape, self.dtype)?;
            return b.copy_from_host(&host.host()?.to_le_bytes());
        }
        match self.host_mut()? {
            HostData::F32(v) => v.copy_from_slice(values),
            HostData::F16(v) => v
                .iter_mut()
                .zip(values)
                .for_each(|(d, &s)| *d = f16::from_f32(s)),
            HostData::BF16(v) => v
                .iter_mut()
                .zip(values)
                .for_each(|(d, &s)| *d = bf16::from_f32(s)),
            other => {
                return Err(Error::bad_input(format!(
                    "expected a float tensor, got {}",
                    other.dtype()
                )))
            }
        }
        Ok(())
    }
    /// A host copy converted to another float dtype.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if self.device() != Device::Cpu {
            return self.to_host()?.to_dtype(dtype);
        }
        if dtype == self.dtype {
            return self.try_clone();
        }
        let v = self.f32_values()?;
        Tensor::from_f32_as(&v, &self.shape, dtype)
    }

    /// A copy on the given device.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        match (&self.storage, device) {
            (Storage::Host(h), Device::Cpu) => Ok(Tensor {
                dtype: self.dtype,
                shape: self.shape.clone(),
                storage: Storage::Host(h.clone()),
            }),
            #[cfg(feature = "cuda")]
            (Storage::Host(h), Device::Cuda(ord)) => {
                let buf = crate::cuda::DeviceBuffer::from_host(ord, &h.to_le_bytes())?;
                Ok(Tensor {
                    dtype: self.dtype,
                    shape: self.shape.clone(),
                    storage: Storage::Cuda(buf),
                })
            }
            #[cfg(feature = "cuda")]
            (Storage::Cuda(_), Device::Cpu) => self.to_host(),
            #[cfg(feature = "cuda")]
            (Storage::Cuda(b), Device::Cuda(ord)) => {
                let buf = b.copy_to(ord)?;
                Ok(Tensor {
                    dtype: self.dtype,
                    shape: self.shape.clone(),
                    storage: Storage::Cuda(buf),
                })
            }
            #[cfg(not(feature = "cuda"))]
            (_, Device::Cuda(_)) => Err(Error::NoDevice(
                "paradec was built without the `cuda` feature".into(),
            )),
        }
    }
    /// A host copy (synchronous for device tensors).
    pub fn to_host(&self) -> Result<Tensor> {
        match &self.storage {
            Storage::Host(_) => self.to_device(Device::Cpu),
            #[cfg(feature = "cuda")]
            Storage::Cuda(b) => {
                let bytes = b.to_host_bytes()?;
                let data = HostData::from_le_bytes(self.dtype, &bytes)?;
                Tensor::from_host(data, &self.shape)
            }
        }
    }
    /// A deep copy on the same device.
    pub fn try_clone(&self) -> Result<Tensor> {
        self.to_device(self.device())
    }

    /// Checks dtype and shape, naming the tensor in the error.
    pub fn check(&self, name: &str, dtype: Option<DType>, shape: &[usize]) -> Result<()> {
        if let Some(dt) = dtype {
            if self.dtype != dt {
                return Err(Error::bad_input(format!(
                    "{name}: expected dtype {dt}, got {}",
                    self.dtype
                )));
            }
        }
        if self.shape != shape {
            return Err(Error::bad_input(format!(
                "{name}: expected shape {}, got {}",
                shape_str(shape),
                shape_str(&self.shape)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_every_dtype() {
        for dt in [
            DType::F16,
            DType::BF16,
            DType::F32,
            DType::I8,
            DType::U8,
            DType::I16,
            DType::I32,
            DType::I64,
        ] {
            let bytes: Vec<u8> = (0..dt.size() * 5).map(|i| (i * 37 + 11) as u8).collect();
            let h = HostData::from_le_bytes(dt, &bytes).unwrap();
            assert_eq!(h.len(), 5);
            assert_eq!(h.to_le_bytes(), bytes);
        }
        assert!(HostData::from_le_bytes(DType::F32, &[0u8; 7]).is_err());
    }

    #[test]
    fn shape_errors_name_the_shapes() {
        let e = Tensor::from_f32(vec![1.0; 5], &[2, 3]).unwrap_err();
        assert!(e.to_string().contains("[2, 3]"), "{e}");
        let t = Tensor::from_f32(vec![1.0; 6], &[2, 3]).unwrap();
        assert!(t
            .check("w", Some(DType::F16), &[2, 3])
            .unwrap_err()
            .to_string()
            .contains("w: expected dtype f16"));
        assert!(t.reshape(&[4, 2]).is_err());
    }

    #[test]
    fn dtype_conversion_rounds() {
        let t = Tensor::from_f32(vec![1.0, 0.1, -3.5], &[3]).unwrap();
        let h = t.to_dtype(DType::F16).unwrap();
        let back = h.f32_values().unwrap();
        assert_eq!(back[0], 1.0);
        assert!((back[1] - 0.1).abs() < 1e-4 && back[1] != 0.1);
        assert_eq!(back[2], -3.5);
    }
}

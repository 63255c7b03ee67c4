//! CUDA backend (feature `cuda`): runtime wrappers and safe kernel launchers.
//! Placeholder: the CUDA foundation fills this in.

/// A CUDA stream.
#[derive(Debug)]
pub struct CudaStream;

/// A device allocation.
#[derive(Debug)]
pub struct DeviceBuffer;

impl DeviceBuffer {
    pub fn device(&self) -> usize {
        0
    }
    pub fn from_host(_ordinal: usize, _bytes: &[u8]) -> crate::Result<Self> {
        Err(crate::Error::NoDevice(
            "CUDA backend not implemented yet".into(),
        ))
    }
    pub fn copy_to(&self, _ordinal: usize) -> crate::Result<Self> {
        Err(crate::Error::NoDevice(
            "CUDA backend not implemented yet".into(),
        ))
    }
    pub fn to_host_bytes(&self) -> crate::Result<Vec<u8>> {
        Err(crate::Error::NoDevice(
            "CUDA backend not implemented yet".into(),
        ))
    }
}

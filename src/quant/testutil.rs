//! Helpers for the quant unit tests: a self-deleting temp dir and writing tensors to a file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use half::f16;

use crate::weights::save_safetensors;
use crate::{HostData, Tensor, Weights};

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "paradec-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn i32t(v: Vec<i32>, shape: &[usize]) -> Tensor {
    Tensor::from_host(HostData::I32(v), shape).unwrap()
}
pub fn i16t(v: Vec<i16>, shape: &[usize]) -> Tensor {
    Tensor::from_host(HostData::I16(v), shape).unwrap()
}
pub fn f16t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_host(
        HostData::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        shape,
    )
    .unwrap()
}

/// Writes `{prefix}.{name}` tensors into one safetensors file and maps it.
pub fn weights_of(prefix: &str, tensors: Vec<(&str, Tensor)>) -> (TempDir, Weights) {
    let dir = TempDir::new("quant");
    let named: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t))
        .collect();
    let refs: Vec<(String, &Tensor)> = named.iter().map(|(n, t)| (n.clone(), t)).collect();
    let path = dir.path().join("model.safetensors");
    save_safetensors(&path, &refs, None).unwrap();
    let w = Weights::from_files(&[path]).unwrap();
    (dir, w)
}

/// Asserts two slices are equal element by element (exactly), with a readable message.
pub fn assert_exact(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w,
            "element {i}: got {g}, want {w}\n got  {got:?}\n want {want:?}"
        );
    }
}

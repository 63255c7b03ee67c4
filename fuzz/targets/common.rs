//! Helpers shared by the fuzz target bodies.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use paradec::Weights;

/// A scratch directory per process and thread (one input at a time per thread; the regression
/// test replays inputs on several threads).
pub fn scratch_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static ID: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    let id = ID.with(|i| *i);
    let d = std::env::temp_dir().join(format!("paradec-fuzz-{tag}-{}-{id}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}

/// Writes `bytes` as a safetensors file in the scratch dir and maps it.
pub fn weights_from_bytes(tag: &str, bytes: &[u8]) -> paradec::Result<Weights> {
    let path = scratch_dir(tag).join("model.safetensors");
    std::fs::write(&path, bytes).map_err(|e| paradec::Error::Io(e.to_string()))?;
    Weights::from_files(&[path])
}

/// Little cursor over the fuzz input.
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data, pos: 0 }
    }
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    pub fn u16(&mut self) -> u16 {
        self.u8() as u16 | (self.u8() as u16) << 8
    }
    pub fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or(&[])
    }
}

/// `len` values cycled from `src` (zeros when `src` is empty), through `f`.
pub fn fill<T>(src: &[u8], len: usize, width: usize, f: impl Fn(&[u8]) -> T) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    let zero = vec![0u8; width];
    for i in 0..len {
        if src.len() < width {
            out.push(f(&zero));
        } else {
            let n = src.len() / width;
            let j = (i % n) * width;
            out.push(f(&src[j..j + width]));
        }
    }
    out
}

/// Exercises a loaded weight: dequantize and forward must agree in size and not panic.
pub fn exercise(q: &paradec::quant::QuantWeight) {
    let (k, n) = (q.in_features(), q.out_features());
    let d = q.dequantize();
    assert_eq!(d.len(), k * n);
    let x: Vec<f32> = (0..2 * k).map(|i| ((i % 7) as f32 - 3.0) * 0.25).collect();
    let mut out = vec![0f32; 2 * n];
    q.forward(&x, 2, &mut out, false).unwrap();
    // Oracle: forward must equal the dense product of the dequantized weight (+ bias).
    for m in 0..2 {
        for c in 0..n {
            let (mut want, mut mag) = (0f64, 0f64);
            for j in 0..k {
                let t = x[m * k + j] as f64 * d[c * k + j] as f64;
                want += t;
                mag += t.abs();
            }
            if let Some(b) = q.bias() {
                want += b[c] as f64;
                mag += (b[c] as f64).abs();
            }
            let got = out[m * n + c] as f64;
            assert!(
                (got - want).abs() <= 1e-5 * mag + 1e-30,
                "forward[{m},{c}] = {got}, dense {want}"
            );
        }
    }
    q.forward(&x, 2, &mut out, true).unwrap();
    let _ = (q.numel(), q.storage_bytes(), q.bias());
}

/// With `PARADEC_FUZZ_DEBUG` set, prints what a load returned (to check seeds reach deep code).
pub fn debug<T>(r: &paradec::Result<T>) {
    if std::env::var_os("PARADEC_FUZZ_DEBUG").is_some() {
        match r {
            Ok(_) => eprintln!("load: ok"),
            Err(e) => eprintln!("load: {e}"),
        }
    }
}

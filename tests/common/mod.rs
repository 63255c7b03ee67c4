//! Helpers shared by the integration tests: fixture lookup, HF reference loading, error norms.
#![allow(dead_code)]

use std::path::PathBuf;

use paradec::{Tensor, Weights};

/// The fixtures folder: `PARADEC_FIXTURES`, else `tests/fixtures` under the crate root (from
/// cargo's runtime `CARGO_MANIFEST_DIR`), else relative to the working directory.
pub fn fixtures_dir() -> PathBuf {
    if let Ok(p) = std::env::var("PARADEC_FIXTURES") {
        return PathBuf::from(p);
    }
    if let Ok(root) = std::env::var("CARGO_MANIFEST_DIR") {
        let p = PathBuf::from(root).join("tests/fixtures");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("tests/fixtures")
}

pub fn fixture(variant: &str) -> PathBuf {
    fixtures_dir().join(variant)
}

pub fn reference(variant: &str) -> Weights {
    Weights::from_files(&[fixture(variant).join("reference.safetensors")])
        .expect("reference.safetensors")
}

pub fn i64s(w: &Weights, name: &str) -> (Vec<i64>, Vec<usize>) {
    let t = w.get(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    (t.as_i64().unwrap().to_vec(), t.shape().to_vec())
}

/// ‖a − b‖ / ‖b‖ over the rows where `keep[row]`, rows of `cols` values.
pub fn rel_err_rows(a: &[f32], b: &[f32], cols: usize, keep: &[bool]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    assert_eq!(a.len(), keep.len() * cols, "row mask length");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (r, &k) in keep.iter().enumerate() {
        if !k {
            continue;
        }
        for c in 0..cols {
            let (x, y) = (a[r * cols + c] as f64, b[r * cols + c] as f64);
            num += (x - y) * (x - y);
            den += y * y;
        }
    }
    assert!(den > 0.0, "reference is all zeros on kept rows");
    (num / den).sqrt()
}

pub fn values(t: &Tensor) -> Vec<f32> {
    t.to_host().unwrap().f32_values().unwrap().into_owned()
}

/// A small deterministic PRNG (xorshift64*) for random test inputs.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

/// One `#[test]` per fixture model, each calling `$check(variant_name)`.
#[macro_export]
macro_rules! fixture_tests {
    ($check:ident) => {
        $crate::fixture_tests!($check: gptj, gpt_neox, gpt_neox_gelu_fast, phi, phi_qk_layernorm,
            falcon_7b_mqa, falcon_new_2ln_gqa, falcon_new_1ln, cohere, cohere2);
    };
    ($check:ident: $($name:ident),*) => {
        $( #[test] fn $name() { $check(stringify!($name)); } )*
    };
}

//! The one dispatch point: each op checks shapes, dtypes and devices once, then calls the CPU
//! reference (`cpu::`) or the CUDA backend by the tensors' device. Layers call `ops`, never a
//! backend directly, so a layer is written once for both devices.
//!
//! Tensors are row-major; "rows × cols" ops view a tensor as [numel / cols, cols].
//!
//! One file per kernel family (norm, rope, activation, embedding, linear, attention), matching
//! `cpu/` and `cuda/kernels/`; this file holds the argument checks they share.

use crate::cpu;
use crate::cpu::norm::NormAffine;
use crate::tensor::{Device, HostData, Tensor};
use crate::vocab::{
    Activation, Affine, AttnMasking, AttnShape, CacheSlots, NormKind, QkvLayout, RotaryArgs,
};
use crate::workspace::Workspace;
use crate::{Error, Result, Stream};

fn float(name: &str, t: &Tensor) -> Result<()> {
    if !t.dtype().is_float() {
        return Err(Error::bad_input(format!(
            "{name}: expected a float tensor, got {}",
            t.dtype()
        )));
    }
    Ok(())
}

fn numel(name: &str, t: &Tensor, n: usize) -> Result<()> {
    if t.numel() != n {
        return Err(Error::bad_input(format!(
            "{name}: expected {n} elements, got shape {:?}",
            t.shape()
        )));
    }
    Ok(())
}

fn same_device(ts: &[(&str, &Tensor)]) -> Result<Device> {
    let dev = ts[0].1.device();
    for (n, t) in ts {
        if t.device() != dev {
            return Err(Error::bad_input(format!(
                "{n} is on {} but {} is on {dev}",
                t.device(),
                ts[0].0
            )));
        }
    }
    Ok(dev)
}

/// The CUDA stream of a call on device tensors.
#[cfg(feature = "cuda")]
fn cuda_stream(s: &Stream) -> Result<&crate::cuda::CudaStream> {
    match s {
        Stream::Cuda(c) => Ok(c),
        Stream::Host => Err(Error::bad_input(
            "an op on CUDA tensors needs a CUDA stream, got the host stream",
        )),
    }
}

/// Runs a CUDA launcher in builds with the `cuda` feature; without it no tensor can be on a
/// device, so the arm only reports that.
macro_rules! on_cuda {
    ($s:ident $(, $uses:ident)* => $call:expr) => {{
        #[cfg(feature = "cuda")]
        let r: Result<()> = {
            let $s = cuda_stream($s)?;
            $call
        };
        #[cfg(not(feature = "cuda"))]
        let r: Result<()> = {
            // What only the CUDA arm reads (the stream, workspace scratch).
            let _ = $s;
            $(let _ = &$uses;)*
            Err(Error::NoDevice(
                "paradec was built without the `cuda` feature".into(),
            ))
        };
        r
    }};
}

/// Runs `f` on the f32 values of a host tensor and writes them back (in place for f32).
fn with_f32_mut<R>(t: &mut Tensor, f: impl FnOnce(&mut [f32]) -> R) -> Result<R> {
    if let Ok(s) = t.as_f32_mut() {
        return Ok(f(s));
    }
    let mut v = t.f32_values()?.into_owned();
    let r = f(&mut v);
    t.set_f32_values(&v)?;
    Ok(r)
}

fn opt_values(t: Option<&Tensor>) -> Result<Option<std::borrow::Cow<'_, [f32]>>> {
    t.map(|t| t.f32_values()).transpose()
}

/// Checks a norm's affine tensors against the row width.
fn check_affine(a: &Affine<'_>, what: &str, cols: usize) -> Result<()> {
    for (n, t) in [("weight", a.weight), ("bias", a.bias)] {
        if let Some(t) = t {
            float(&format!("{what} {n}"), t)?;
            numel(&format!("{what} {n}"), t, cols)?;
        }
    }
    Ok(())
}

mod activation;
mod attention;
mod embedding;
mod kv_quant;
mod linear;
mod norm;
mod rope;

pub use activation::{act_mul, activate, add_inplace, scale_inplace};
pub use attention::{attention, head_norm, split_qkv};
pub use embedding::embedding;
pub use kv_quant::{
    attention_quant, paged_attention, paged_rotary_and_cache_write, rotary_and_cache_write_quant,
};
pub use linear::{
    linear, parse_linear_override, prepared_linear, prepared_linear_group, prepared_linear_sum,
    quant_linear, select_linear, select_linear_with, set_linear_override, stream_grid,
    LinearFormat, LinearPlan,
};
pub use norm::{norm, norm2};
pub use rope::{rotary_and_cache_write, split_rotary_and_cache_write};

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_f32(v.to_vec(), shape).unwrap()
    }

    #[test]
    fn split_qkv_layouts_by_hand() {
        // head_dim 1; feature values name their role: 10+h = q of head h, 20+g = k, 30+g = v.
        let s = Stream::Host;
        let run = |layout, fused: &[f32], heads, kv| {
            let (mut q, mut k, mut v) = (
                t(&vec![0.0; heads], &[1, heads]),
                t(&vec![0.0; kv], &[1, kv]),
                t(&vec![0.0; kv], &[1, kv]),
            );
            split_qkv(
                &s,
                layout,
                &t(fused, &[1, fused.len()]),
                heads,
                kv,
                1,
                &mut q,
                &mut k,
                &mut v,
            )
            .unwrap();
            (
                q.as_f32().unwrap().to_vec(),
                k.as_f32().unwrap().to_vec(),
                v.as_f32().unwrap().to_vec(),
            )
        };
        // NeoX per head [q0 k0 v0 | q1 k1 v1].
        let (q, k, v) = run(
            QkvLayout::FusedPerHead,
            &[10., 20., 30., 11., 21., 31.],
            2,
            2,
        );
        assert_eq!((q, k, v), (vec![10., 11.], vec![20., 21.], vec![30., 31.]));
        // Falcon-7B [q0 q1 q2 q3 | k | v].
        let (q, k, v) = run(
            QkvLayout::FusedQueriesFirst,
            &[10., 11., 12., 13., 20., 30.],
            4,
            1,
        );
        assert_eq!((q, k, v), (vec![10., 11., 12., 13.], vec![20.], vec![30.]));
        // Falcon new architecture, 4 heads in 2 groups: [q0 q1 k0 v0 | q2 q3 k1 v1].
        let (q, k, v) = run(
            QkvLayout::FusedGrouped,
            &[10., 11., 20., 30., 12., 13., 21., 31.],
            4,
            2,
        );
        assert_eq!(
            (q, k, v),
            (vec![10., 11., 12., 13.], vec![20., 21.], vec![30., 31.])
        );
    }

    #[test]
    fn split_qkv_per_head_needs_one_kv_head_per_head() {
        // 2 heads over 1 kv head cannot be [q_h | k_h | v_h] per head: the sizes alone fit.
        let (mut q, mut k, mut v) = (
            t(&[0.0; 2], &[1, 2]),
            t(&[0.0; 1], &[1, 1]),
            t(&[0.0; 1], &[1, 1]),
        );
        let fused = t(&[10., 11., 20., 30.], &[1, 4]);
        let e = split_qkv(
            &Stream::Host,
            QkvLayout::FusedPerHead,
            &fused,
            2,
            1,
            1,
            &mut q,
            &mut k,
            &mut v,
        )
        .unwrap_err();
        assert!(e.to_string().contains("per-head"), "{e}");
        assert_eq!(q.as_f32().unwrap(), &[0.0, 0.0], "q untouched");
        // The same sizes in the queries-first layout split.
        split_qkv(
            &Stream::Host,
            QkvLayout::FusedQueriesFirst,
            &fused,
            2,
            1,
            1,
            &mut q,
            &mut k,
            &mut v,
        )
        .unwrap();
        assert_eq!(q.as_f32().unwrap(), &[10.0, 11.0]);
    }

    #[test]
    fn head_norm_per_head_and_shared_by_hand() {
        // Two heads of [1, 3] (mean 2, var 1 → normalized [-1, 1] with eps 0).
        let s = Stream::Host;
        let mut x = t(&[1., 3., 1., 3.], &[1, 4]);
        let per_head = t(&[1., 2., 10., 20.], &[2, 2]);
        head_norm(
            &s,
            NormKind::LayerNorm,
            &mut x,
            2,
            2,
            &Affine {
                weight: Some(&per_head),
                bias: None,
            },
            0.0,
        )
        .unwrap();
        assert_eq!(x.as_f32().unwrap(), &[-1., 2., -10., 20.]);
        let mut x = t(&[1., 3., 1., 3.], &[1, 4]);
        let (w, b) = (t(&[2., 2.], &[2]), t(&[0.5, -0.5], &[2]));
        head_norm(
            &s,
            NormKind::LayerNorm,
            &mut x,
            2,
            2,
            &Affine {
                weight: Some(&w),
                bias: Some(&b),
            },
            0.0,
        )
        .unwrap();
        assert_eq!(x.as_f32().unwrap(), &[-1.5, 1.5, -1.5, 1.5]);
        let bad = t(&[1., 2., 3.], &[3]);
        assert!(head_norm(
            &s,
            NormKind::LayerNorm,
            &mut x,
            2,
            2,
            &Affine {
                weight: Some(&bad),
                bias: None
            },
            0.0
        )
        .is_err());
    }

    #[test]
    fn ops_reject_mismatched_shapes() {
        let s = Stream::Host;
        let x = t(&[1.; 6], &[2, 3]);
        let w = t(&[1.; 8], &[2, 4]);
        let mut out = t(&[0.; 4], &[2, 2]);
        let mut ws = Workspace::cpu();
        let e = linear(&s, &mut ws, &x, &w, None, &mut out, false).unwrap_err();
        assert!(e.to_string().contains("K = 4"), "{e}");
        let mut small = t(&[0.; 5], &[5]);
        assert!(norm(
            &s,
            NormKind::RmsNorm,
            &x,
            &Affine {
                weight: None,
                bias: None
            },
            1e-5,
            &mut small
        )
        .is_err());
        let table = t(&[0.; 6], &[3, 2]);
        let mut emb = t(&[0.; 2], &[1, 2]);
        assert!(embedding(&s, &mut ws, &table, &[3], &mut emb)
            .unwrap_err()
            .to_string()
            .contains("token id 3"));
    }
}

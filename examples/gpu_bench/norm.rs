//! Norm kernels: RMSNorm, LayerNorm, the fused residual add and the two-output form.

use super::*;

/// Times kernel `k` (one of this family's) at rows × cols.
pub fn run(b: &Bench, k: Kernel, dt: Dt, rows: usize, cols: usize) -> Result<Row> {
    let n = rows * cols;
    let eb = 2usize; // bytes per element
    let mat = n * eb;
    let vecb = cols * eb;
    let rms = ffi::paradec_norm_kind::PARADEC_RMS_NORM as i32;
    let ln = ffi::paradec_norm_kind::PARADEC_LAYER_NORM as i32;
    let shape = format!("{rows}x{cols}");
    match k {
        Kernel::RmsNorm | Kernel::LayerNorm | Kernel::AddRmsNorm | Kernel::LayerNorm2 => {
            let (ins, outs) = match k {
                Kernel::AddRmsNorm => (2, 2), // x, residual in; x, out written
                Kernel::LayerNorm2 => (1, 2),
                _ => (1, 1),
            };
            let per_set = (ins + outs) * mat;
            let sets = b.sets_for(per_set);
            let mut x = Pool::new(mat, sets)?;
            x.fill_float(dt, -2.0, 2.0, 1)?;
            let mut r = Pool::new(if k == Kernel::AddRmsNorm { mat } else { 0 }, sets)?;
            if k == Kernel::AddRmsNorm {
                // Small residuals keep x bounded over thousands of in-place adds.
                r.fill_float(dt, -1e-3, 1e-3, 2)?;
            }
            let out = Pool::new(mat, sets)?;
            let out2 = Pool::new(if k == Kernel::LayerNorm2 { mat } else { 0 }, sets)?;
            let mut w = Pool::new(vecb, 2)?;
            w.fill_float(dt, 0.5, 1.5, 3)?;
            let mut bias = Pool::new(vecb, 2)?;
            bias.fill_float(dt, -0.5, 0.5, 4)?;
            let kind = if matches!(k, Kernel::RmsNorm | Kernel::AddRmsNorm) {
                rms
            } else {
                ln
            };
            let with_bias = kind == ln;
            let mut launch = |i: usize, st: &CudaStream| -> Result<()> {
                // SAFETY: every pointer is a set of a live pool sized for rows×cols (or cols).
                let code = unsafe {
                    ffi::paradec_norm_fused(
                        kind,
                        dt.code(),
                        x.ptr(i),
                        if k == Kernel::AddRmsNorm {
                            r.ptr(i)
                        } else {
                            ptr::null_mut()
                        },
                        w.ptr(0),
                        if with_bias {
                            bias.ptr(0)
                        } else {
                            ptr::null_mut()
                        },
                        out.ptr(i),
                        if k == Kernel::LayerNorm2 {
                            w.ptr(1)
                        } else {
                            ptr::null_mut()
                        },
                        if k == Kernel::LayerNorm2 {
                            bias.ptr(1)
                        } else {
                            ptr::null_mut()
                        },
                        if k == Kernel::LayerNorm2 {
                            out2.ptr(i)
                        } else {
                            ptr::null_mut()
                        },
                        rows,
                        cols,
                        1e-5,
                        st.raw(),
                    )
                };
                status(code, "paradec_norm_fused")
            };
            let t = b.time(sets, &mut launch)?;
            Ok(Row {
                kernel: k.name(),
                dtype: dt.name(),
                shape,
                bytes: per_set,
                t,
            })
        }
        _ => unreachable!("norm runs only its own kernels"),
    }
}

//! Activations, the gated multiply and the add.

use super::*;

/// Times kernel `k` (one of this family's) at rows × cols.
pub fn run(b: &Bench, k: Kernel, dt: Dt, rows: usize, cols: usize) -> Result<Row> {
    let n = rows * cols;
    let eb = 2usize; // bytes per element
    let mat = n * eb;
    let shape = format!("{rows}x{cols}");
    match k {
        Kernel::Gelu | Kernel::SiluMul | Kernel::Add => {
            let per_set = if k == Kernel::Gelu { 2 * mat } else { 3 * mat };
            let sets = b.sets_for(per_set);
            let mut x = Pool::new(mat, sets)?;
            x.fill_float(dt, -2.0, 2.0, 8)?;
            let mut y = Pool::new(if k == Kernel::Gelu { 0 } else { mat }, sets)?;
            if k != Kernel::Gelu {
                y.fill_float(dt, -1e-3, 1e-3, 9)?;
            }
            let out = Pool::new(if k == Kernel::SiluMul { mat } else { 0 }, sets)?;
            let mut launch = |i: usize, st: &CudaStream| -> Result<()> {
                // SAFETY: pool sets of n elements each.
                let code = unsafe {
                    match k {
                        Kernel::Gelu => ffi::paradec_activate(
                            ffi::paradec_activation::PARADEC_GELU_ERF as i32,
                            dt.code(),
                            x.ptr(i),
                            n,
                            st.raw(),
                        ),
                        Kernel::SiluMul => ffi::paradec_act_mul(
                            ffi::paradec_activation::PARADEC_SILU as i32,
                            dt.code(),
                            x.ptr(i),
                            y.ptr(i),
                            out.ptr(i),
                            n,
                            st.raw(),
                        ),
                        _ => ffi::paradec_add_inplace(dt.code(), x.ptr(i), y.ptr(i), n, st.raw()),
                    }
                };
                status(code, k.name())
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
        _ => unreachable!("activation runs only its own kernels"),
    }
}

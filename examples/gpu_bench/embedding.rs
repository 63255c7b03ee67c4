//! The embedding gather.

use super::*;

/// Times kernel `k` (one of this family's) at rows × cols.
pub fn run(b: &Bench, k: Kernel, dt: Dt, rows: usize, cols: usize) -> Result<Row> {
    let n = rows * cols;
    let eb = 2usize; // bytes per element
    let mat = n * eb;
    let vecb = cols * eb;
    let shape = format!("{rows}x{cols}");
    match k {
        Kernel::Embedding => {
            let vocab = 32000usize;
            let per_set = 2 * mat + rows * 4;
            let sets = b.sets_for(per_set);
            let mut table = Pool::new(vocab * vecb, 1)?;
            table.fill_float(dt, -1.0, 1.0, 10)?;
            let mut ids = Pool::new(rows * 4, sets)?;
            let ids_b: Vec<u8> = (0..rows)
                .map(|i| ((i as u64 * 7919 + 13) % vocab as u64) as i32)
                .flat_map(|i| i.to_le_bytes())
                .collect();
            ids.fill_bytes(&ids_b)?;
            let out = Pool::new(mat, sets)?;
            let mut launch = |i: usize, st: &CudaStream| -> Result<()> {
                // SAFETY: ids within the vocabulary; pool sets sized for rows×cols.
                let code = unsafe {
                    ffi::paradec_embedding(
                        dt.code(),
                        table.ptr(0),
                        vocab,
                        cols,
                        ids.ptr(i),
                        ffi::paradec_id_type::PARADEC_IDS_I32 as i32,
                        rows,
                        out.ptr(i),
                        st.raw(),
                    )
                };
                status(code, "paradec_embedding")
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
        _ => unreachable!("embedding runs only its own kernels"),
    }
}

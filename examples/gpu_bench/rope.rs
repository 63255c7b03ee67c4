//! Rotary embedding + KV-cache write.

use super::*;

/// Times kernel `k` (one of this family's) at rows × cols.
pub fn run(b: &Bench, k: Kernel, dt: Dt, rows: usize, cols: usize) -> Result<Row> {
    let eb = 2usize; // bytes per element
    let shape = format!("{rows}x{cols}");
    match k {
        Kernel::RopeCache => {
            // Heads of 128, GQA 4:1, NeoX-style full rotary. Prefill: one sequence of `rows`
            // tokens into an empty cache; decode: `rows` sequences of one token at past 1000.
            let head_dim = 128;
            let heads = cols / head_dim;
            let kv = (heads / 4).max(1);
            let (batch, q_len, past) = if rows >= 1024 {
                (1, rows, 0)
            } else {
                (rows, 1, 1000)
            };
            let capacity = past + q_len;
            let tokens = batch * q_len;
            let qb = tokens * heads * head_dim * eb;
            let kb = tokens * kv * head_dim * eb;
            // q and k read + written, v read, k and v written to the cache, positions read.
            let per_set = 2 * qb + 2 * kb + kb + 2 * kb + tokens * 8;
            let sets = b.sets_for(per_set);
            let mut q = Pool::new(qb, sets)?;
            q.fill_float(dt, -2.0, 2.0, 5)?;
            let mut kp = Pool::new(kb, sets)?;
            kp.fill_float(dt, -2.0, 2.0, 6)?;
            let mut v = Pool::new(kb, sets)?;
            v.fill_float(dt, -2.0, 2.0, 7)?;
            let pos: Vec<u8> = (0..batch)
                .flat_map(|_| (0..q_len).map(|t| (past + t) as i64))
                .flat_map(|p| p.to_le_bytes())
                .collect();
            let mut positions = Pool::new(pos.len(), sets)?;
            positions.fill_bytes(&pos)?;
            let past_b: Vec<u8> = (0..batch)
                .flat_map(|_| (past as i64).to_le_bytes())
                .collect();
            let mut past_len = Pool::new(past_b.len(), 1)?;
            past_len.fill_bytes(&past_b)?;
            let inv: Vec<u8> = (0..head_dim / 2)
                .map(|j| 1.0f32 / 10000f32.powf(2.0 * j as f32 / head_dim as f32))
                .flat_map(|f| f.to_le_bytes())
                .collect();
            let mut inv_freq = Pool::new(inv.len(), 1)?;
            inv_freq.fill_bytes(&inv)?;
            let cache_bytes = batch * capacity * kv * head_dim * eb;
            let ck = Pool::new(cache_bytes, 1)?;
            let cv = Pool::new(cache_bytes, 1)?;
            let half = ffi::paradec_rope_style::PARADEC_ROPE_HALF as i32;
            let mut launch = |i: usize, st: &CudaStream| -> Result<()> {
                // SAFETY: pool sets sized for these shapes; past + q_len ≤ capacity.
                let code = unsafe {
                    ffi::paradec_rotary_cache_write(
                        dt.code(),
                        q.ptr(i),
                        kp.ptr(i),
                        v.ptr(i),
                        batch,
                        q_len,
                        heads,
                        kv,
                        head_dim,
                        positions.ptr(i) as *const i64,
                        half,
                        head_dim,
                        inv_freq.ptr(0) as *const f32,
                        1.0,
                        past_len.ptr(0) as *const i64,
                        capacity,
                        ck.ptr(0),
                        cv.ptr(0),
                        st.raw(),
                    )
                };
                status(code, "paradec_rotary_cache_write")
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
        _ => unreachable!("rope runs only its own kernels"),
    }
}

//! Token embedding gather.

/// `out[t] = table[ids[t]]`; ids must already be checked to lie in `0..vocab`.
pub fn embedding(table: &[f32], hidden: usize, ids: &[u32], out: &mut [f32]) {
    for (t, &id) in ids.iter().enumerate() {
        let src = id as usize * hidden;
        out[t * hidden..(t + 1) * hidden].copy_from_slice(&table[src..src + hidden]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gathers_rows() {
        let table = [0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
        let mut out = [0.0; 6];
        super::embedding(&table, 2, &[2, 0, 2], &mut out);
        assert_eq!(out, [20.0, 21.0, 0.0, 1.0, 20.0, 21.0]);
    }
}

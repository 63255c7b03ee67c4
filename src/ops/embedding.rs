//! The token-embedding gather.

use super::*;

/// `out[t] = table[ids[t]]`; every id must be below the table's row count. On a device the ids
/// travel through scratch from `ws`.
pub fn embedding(
    s: &Stream,
    ws: &mut Workspace,
    table: &Tensor,
    ids: &[u32],
    out: &mut Tensor,
) -> Result<()> {
    float("embedding table", table)?;
    if table.shape().len() != 2 {
        return Err(Error::bad_input(format!(
            "embedding table: expected [vocab, hidden], got {:?}",
            table.shape()
        )));
    }
    let (vocab, hidden) = (table.shape()[0], table.shape()[1]);
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(Error::bad_input(format!(
            "token id {bad} is outside the vocabulary of {vocab}"
        )));
    }
    numel("embedding output", out, ids.len() * hidden)?;
    match same_device(&[("embedding table", table), ("embedding output", out)])? {
        Device::Cpu => {
            let tv = table.f32_values()?;
            with_f32_mut(out, |o| cpu::embedding::embedding(&tv, hidden, ids, o))
        }
        Device::Cuda(_) => on_cuda!(s, ws => {
            if let Some(d) = ws.staged().and_then(|st| st.ids(ids)) {
                // SAFETY: the workspace staged exactly these ids (checked against the
                // vocabulary above) into its step region, queued on this forward's stream
                // before any of its ops.
                return unsafe { crate::cuda::kernels::embedding_staged_ids(table, hidden, ids, d, out, s) };
            }
            let mut scratch = ws.scratch(&[4 * ids.len()], crate::DType::U8)?;
            crate::cuda::kernels::embedding_host_ids(table, hidden, ids, &mut scratch, out, s)
        }),
    }
}

//! `AttnParams`: the per-call description of a batch — sizes, past length and position offset
//! per sequence, an optional padding mask over cache slots, and the block table of a paged
//! cache.

use crate::arch::Rotary;
use crate::kv_quant::PagedTable;
use crate::workspace::{widen_table, StepTables};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
/// Where the tokens of one forward sit: batch, query length, each sequence's past length in the cache, positions and an optional padding mask.
pub struct AttnParams {
    /// Sequences.
    pub batch: usize,
    /// New tokens per sequence.
    pub q_len: usize,
    /// Tokens already in the cache, per sequence; new tokens go to slots `past_len[b]`..+q_len.
    pub past_len: Vec<usize>,
    /// Position of sequence b's query t is `past_len[b]` + t + `position_offset[b]` (negative
    /// offsets skip left padding, as HF's `cumsum(mask) − 1`).
    pub position_offset: Vec<i64>,
    /// Additive mask over cache slots, [batch, mask_stride]: 0 to attend, −∞ to hide.
    pub mask: Option<Vec<f32>>,
    /// Slots per mask row (≥ each sequence's past + q_len).
    pub mask_stride: usize,
    /// Where each sequence's positions live in a paged cache's pools (`with_block_table`);
    /// None for a contiguous cache. Slot j of a sequence (the mask's column j) is its
    /// position j, wherever its page lies.
    pub block_table: Option<PagedTable>,
}

impl AttnParams {
    /// A batch with nothing cached yet and no padding.
    pub fn new(batch: usize, q_len: usize) -> Self {
        Self::with_past(batch, q_len, vec![0; batch])
    }

    /// `batch` sequences of `q_len` new tokens after `past_len[b]` cached ones, at positions `past_len[b]` + t, with no mask.
    pub fn with_past(batch: usize, q_len: usize, past_len: Vec<usize>) -> Self {
        AttnParams {
            batch,
            q_len,
            past_len,
            position_offset: vec![0; batch],
            mask: None,
            mask_stride: 0,
            block_table: None,
        }
    }

    /// Sets the block table of a call over a paged cache (`KvCache::paged`): sequence b's
    /// positions `0 .. past_len[b] + q_len` live in its first `page_count[b]` pages. Checked
    /// by `validate` against the batch and lengths, and by the forward against the cache's
    /// pools and page size before anything is written.
    pub fn with_block_table(mut self, table: PagedTable) -> Self {
        self.block_table = Some(table);
        self
    }

    /// Sets a padding mask from a 0/1 attention mask over cache slots, [batch, slots]
    /// (HF's `attention_mask`), and position offsets that skip each sequence's left padding.
    pub fn with_attention_mask(mut self, mask01: &[i64], slots: usize) -> Result<Self> {
        if slots == 0 || mask01.len() != self.batch * slots {
            return Err(Error::bad_input(format!(
                "attention mask: expected {} × {slots} values, got {}",
                self.batch,
                mask01.len()
            )));
        }
        if let Some(&bad) = mask01.iter().find(|&&m| m != 0 && m != 1) {
            return Err(Error::bad_input(format!(
                "attention mask values must be 0 or 1, got {bad}"
            )));
        }
        self.mask = Some(
            mask01
                .iter()
                .map(|&m| if m == 1 { 0.0 } else { f32::NEG_INFINITY })
                .collect(),
        );
        self.mask_stride = slots;
        // Left padding: the pads before a sequence's first attended slot shift its positions.
        for b in 0..self.batch {
            let row = &mask01[b * slots..(b + 1) * slots];
            let pads = row.iter().take_while(|&&m| m == 0).count();
            self.position_offset[b] = -(pads as i64);
        }
        Ok(self)
    }

    /// batch · q_len.
    pub fn tokens(&self) -> usize {
        self.batch * self.q_len
    }

    /// Checks lengths, positions, the mask and the block table against each other (the
    /// table's size and page counts for the batch, each sequence's positions within its pages:
    /// `BlockTable::check_lengths`).
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.q_len == 0 {
            return Err(Error::bad_input(format!(
                "batch {} and query length {} must be positive",
                self.batch, self.q_len
            )));
        }
        if self.past_len.len() != self.batch || self.position_offset.len() != self.batch {
            return Err(Error::bad_input(format!(
                "past_len ({}) and position_offset ({}) need one entry per sequence ({})",
                self.past_len.len(),
                self.position_offset.len(),
                self.batch
            )));
        }
        if let Some(m) = &self.mask {
            let need = self
                .past_len
                .iter()
                .map(|p| p + self.q_len)
                .max()
                .unwrap_or(0);
            if self.mask_stride < need || m.len() != self.batch * self.mask_stride {
                return Err(Error::bad_input(format!(
                    "padding mask: needs {} rows of at least {need} slots, got {} values with stride {}",
                    self.batch,
                    m.len(),
                    self.mask_stride
                )));
            }
        }
        if let Some(t) = &self.block_table {
            t.as_block_table()
                .check_lengths(self.batch, &self.past_len, self.q_len)?;
        }
        Ok(())
    }

    /// The tables a forward over these params stages once for all its layers
    /// (`Workspace::stage_step`): `ids` (may be empty), positions, past lengths, the mask — with
    /// rows of `mask_stride` slots when given (a captured graph's fixed stride; slots past a
    /// row's own are 0 and never read), else its own — the frequencies of each of the
    /// model's `rotary` tables at this step's largest position, and the block table — with
    /// `table_width` entries per sequence when given (a captured graph's fixed width: a wider
    /// table is `CapacityExceeded`), else its own. Attention plans its launch for past lengths
    /// up to `plan_max_past` (default: this step's largest).
    pub(crate) fn step_tables(
        &self,
        ids: &[u32],
        rotary: &[Rotary],
        plan_max_past: Option<usize>,
        mask_stride: Option<usize>,
        table_width: Option<usize>,
    ) -> Result<StepTables> {
        let positions = self.positions();
        let max_pos = positions.iter().copied().max().unwrap_or(0);
        let (mask, mask_stride) = match (&self.mask, mask_stride) {
            (Some(m), Some(ms)) if ms != self.mask_stride => {
                let keep = ms.min(self.mask_stride);
                let mut out = vec![0.0f32; self.batch * ms];
                for b in 0..self.batch {
                    out[b * ms..b * ms + keep]
                        .copy_from_slice(&m[b * self.mask_stride..b * self.mask_stride + keep]);
                }
                (Some(out), ms)
            }
            (m, _) => (m.clone(), self.mask_stride),
        };
        let block_table = match (&self.block_table, table_width) {
            (Some(t), Some(w)) => Some(widen_table(t, self.batch, w)?),
            (t, _) => t.clone(),
        };
        Ok(StepTables {
            ids: ids.to_vec(),
            positions,
            past_len: self.past_len.clone(),
            mask,
            mask_stride,
            freqs: rotary
                .iter()
                .map(|r| match r {
                    Rotary::Rope(rc) => Some(rc.freqs(max_pos).inv_freq),
                    Rotary::None => None,
                })
                .collect(),
            plan_max_past: plan_max_past
                .unwrap_or_else(|| self.past_len.iter().copied().max().unwrap_or(0)),
            block_table,
        })
    }

    /// Checks that there is one token id per query token.
    pub fn check_ids_len(&self, ids: &[u32]) -> Result<()> {
        if ids.len() != self.tokens() {
            return Err(Error::bad_input(format!(
                "token ids: expected batch {} × q_len {} = {}, got {}",
                self.batch,
                self.q_len,
                self.tokens(),
                ids.len()
            )));
        }
        Ok(())
    }

    /// The position of every query token, [batch · q_len].
    pub fn positions(&self) -> Vec<i64> {
        let mut v = Vec::with_capacity(self.tokens());
        for b in 0..self.batch {
            for t in 0..self.q_len {
                v.push((self.past_len[b] + t) as i64 + self.position_offset[b]);
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_shifts_positions() {
        // Sequence 1 has two pads: its first real token gets position 0.
        let p = AttnParams::new(2, 4)
            .with_attention_mask(&[1, 1, 1, 1, 0, 0, 1, 1], 4)
            .unwrap();
        assert_eq!(p.positions(), vec![0, 1, 2, 3, -2, -1, 0, 1]);
        assert_eq!(p.mask.as_ref().unwrap()[4], f32::NEG_INFINITY);
        p.validate().unwrap();
        // A decode step after it: past 4, one token, mask of 5 slots.
        let d = AttnParams::with_past(2, 1, vec![4, 4])
            .with_attention_mask(&[1, 1, 1, 1, 1, 0, 0, 1, 1, 1], 5)
            .unwrap();
        assert_eq!(d.positions(), vec![4, 2]);
        assert!(AttnParams::new(2, 1)
            .with_attention_mask(&[1, 2], 1)
            .is_err());
        let short = AttnParams::with_past(1, 2, vec![3])
            .with_attention_mask(&[1, 1, 1, 1], 4)
            .unwrap();
        assert!(short
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at least 5 slots"));
    }
}

//! A forward's per-step tables — token ids, positions, past lengths, the padding mask and the
//! rotary frequencies — staged once per forward: written into page-locked host memory and
//! copied with one transfer into a device region of fixed address that every layer's kernels
//! read. One upload replaces one per op and layer; and because the addresses do not move, a
//! captured CUDA graph of a decode step reads the new step's values after a restage, with no
//! recapture.
//!
//! Ops find their tables here by identity: an op whose host slices are the staged ones (the
//! same memory, which the forward borrows for its whole duration) reads the device copies;
//! any other call uploads its own, as before.

// Without the `cuda` feature nothing is staged (the CPU reference reads host slices).
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

/// The host side of a step: what the kernels of one forward read on the device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepTables {
    /// Token ids, [batch · q_len] (empty when the forward starts from hidden states).
    pub ids: Vec<u32>,
    /// Position of every query token, [batch · q_len].
    pub positions: Vec<i64>,
    /// Cached tokens per sequence.
    pub past_len: Vec<usize>,
    /// Additive mask over cache slots, [batch, mask_stride], if any.
    pub mask: Option<Vec<f32>>,
    /// Slots per mask row.
    pub mask_stride: usize,
    /// Rotary frequencies of each of the model's rotary tables at this step (`None` for a
    /// table without rotary or one no layer of the forward uses).
    pub freqs: Vec<Option<Vec<f32>>>,
    /// The past length attention plans its launch for (≥ every past length): the step's own
    /// maximum when eager, a bound fixed at capture for a graph.
    pub plan_max_past: usize,
}

/// Byte offsets of each table in the staged region.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StepLayout {
    pub ids: usize,
    pub positions: usize,
    pub past_len: usize,
    pub mask: usize,
    pub freqs: Vec<usize>,
    pub bytes: usize,
}

/// Tables aligned so every kernel's scalar and vector reads are aligned.
const TABLE_ALIGN: usize = 16;

impl StepTables {
    /// Where each table goes, in one region.
    pub(crate) fn layout(&self) -> StepLayout {
        let mut at = 0usize;
        let mut place = |bytes: usize| {
            let off = at;
            at = (at + bytes).next_multiple_of(TABLE_ALIGN);
            off
        };
        let ids = place(4 * self.ids.len());
        let positions = place(8 * self.positions.len());
        let past_len = place(8 * self.past_len.len());
        let mask = place(4 * self.mask.as_ref().map_or(0, Vec::len));
        let freqs = self
            .freqs
            .iter()
            .map(|f| place(4 * f.as_ref().map_or(0, Vec::len)))
            .collect();
        StepLayout {
            ids,
            positions,
            past_len,
            mask,
            freqs,
            bytes: at.max(TABLE_ALIGN),
        }
    }

    /// Writes the tables into `out` (at least `layout.bytes` long) at `layout`'s offsets.
    pub(crate) fn write(&self, layout: &StepLayout, out: &mut [u8]) {
        fn put<const N: usize>(out: &mut [u8], off: usize, vals: impl Iterator<Item = [u8; N]>) {
            for (i, v) in vals.enumerate() {
                out[off + N * i..off + N * (i + 1)].copy_from_slice(&v);
            }
        }
        put(out, layout.ids, self.ids.iter().map(|v| v.to_le_bytes()));
        put(
            out,
            layout.positions,
            self.positions.iter().map(|v| v.to_le_bytes()),
        );
        put(
            out,
            layout.past_len,
            self.past_len.iter().map(|&v| (v as i64).to_le_bytes()),
        );
        if let Some(m) = &self.mask {
            put(out, layout.mask, m.iter().map(|v| v.to_le_bytes()));
        }
        for (f, &off) in self.freqs.iter().zip(&layout.freqs) {
            if let Some(f) = f {
                put(out, off, f.iter().map(|v| v.to_le_bytes()));
            }
        }
    }
}

/// Whether `host` is the very slice `staged` (same memory, same length, not empty).
fn same<T>(host: &[T], staged: &[T]) -> bool {
    !host.is_empty() && host.as_ptr() == staged.as_ptr() && host.len() == staged.len()
}

/// A staged step: the host tables and the device address of their copy.
#[derive(Debug)]
pub(crate) struct StagedStep {
    pub tables: StepTables,
    pub layout: StepLayout,
    /// Device address of the region (an integer: the region belongs to the workspace).
    pub base: usize,
}

impl StagedStep {
    fn at<T>(&self, off: usize) -> *const T {
        (self.base + off) as *const T
    }

    /// The device copy of token ids `host`, when they are the staged ones.
    pub fn ids(&self, host: &[u32]) -> Option<*const u32> {
        same(host, &self.tables.ids).then(|| self.at(self.layout.ids))
    }

    /// The device copies of positions and past lengths, when both are the staged ones.
    pub fn positions_and_past(
        &self,
        positions: &[i64],
        past: &[usize],
    ) -> Option<(*const i64, *const i64)> {
        (same(positions, &self.tables.positions) && same(past, &self.tables.past_len)).then(|| {
            (
                self.at(self.layout.positions),
                self.at(self.layout.past_len),
            )
        })
    }

    /// The device copy of past lengths, when they are the staged ones.
    pub fn past(&self, past: &[usize]) -> Option<*const i64> {
        same(past, &self.tables.past_len).then(|| self.at(self.layout.past_len))
    }

    /// The device copy of a mask (NULL for none), when it is the staged one.
    pub fn mask(&self, mask: Option<&[f32]>) -> Option<*const f32> {
        match (mask, &self.tables.mask) {
            (None, None) => Some(std::ptr::null()),
            (Some(m), Some(s)) if same(m, s) => Some(self.at(self.layout.mask)),
            _ => None,
        }
    }

    /// The device copy of rotary frequencies `host`, when they are one of the staged tables.
    pub fn freqs(&self, host: &[f32]) -> Option<*const f32> {
        self.tables
            .freqs
            .iter()
            .zip(&self.layout.freqs)
            .find(|(f, _)| f.as_deref().is_some_and(|f| same(host, f)))
            .map(|(_, &off)| self.at(off))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_aligns_and_write_places_every_table() {
        let t = StepTables {
            ids: vec![7, 9, 11],
            positions: vec![4, 2, -1],
            past_len: vec![4, 3],
            mask: Some(vec![0.0, f32::NEG_INFINITY, 0.5]),
            mask_stride: 3,
            freqs: vec![None, Some(vec![1.0, 0.25])],
            plan_max_past: 64,
        };
        let l = t.layout();
        for off in [
            l.ids,
            l.positions,
            l.past_len,
            l.mask,
            l.freqs[0],
            l.freqs[1],
        ] {
            assert_eq!(off % TABLE_ALIGN, 0);
        }
        assert!(l.positions >= 12 && l.past_len >= l.positions + 24 && l.mask >= l.past_len + 16);
        let mut b = vec![0u8; l.bytes];
        t.write(&l, &mut b);
        let i64_at = |o: usize| i64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let f32_at = |o: usize| f32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!(
            u32::from_le_bytes(b[l.ids + 8..l.ids + 12].try_into().unwrap()),
            11
        );
        assert_eq!(i64_at(l.positions + 16), -1);
        assert_eq!(i64_at(l.past_len + 8), 3);
        assert_eq!(f32_at(l.mask + 4), f32::NEG_INFINITY);
        assert_eq!(f32_at(l.freqs[1] + 4), 0.25);
    }

    #[test]
    fn only_the_staged_slices_are_recognised() {
        let t = StepTables {
            ids: vec![1, 2],
            positions: vec![5, 6],
            past_len: vec![5, 6],
            mask: None,
            mask_stride: 0,
            freqs: vec![Some(vec![1.0])],
            plan_max_past: 6,
        };
        let layout = t.layout();
        let s = StagedStep {
            tables: t,
            layout,
            base: 4096,
        };
        let copy = s.tables.positions.clone();
        assert!(s.positions_and_past(&copy, &s.tables.past_len).is_none());
        let (p, q) = s
            .positions_and_past(&s.tables.positions, &s.tables.past_len)
            .unwrap();
        assert_eq!(p as usize, 4096 + s.layout.positions);
        assert_eq!(q as usize, 4096 + s.layout.past_len);
        assert_eq!(s.mask(None), Some(std::ptr::null()));
        assert!(s.mask(Some(&[0.0, 0.0])).is_none());
        assert!(s.freqs(&[1.0]).is_none());
        assert!(s.freqs(s.tables.freqs[0].as_deref().unwrap()).is_some());
        assert!(s.ids(&s.tables.ids).is_some());
    }
}

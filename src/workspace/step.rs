//! A forward's per-step tables — token ids, positions, past lengths, the padding mask, the
//! rotary frequencies and a paged cache's block table — staged once per forward: written into page-locked host memory and
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

use crate::kv_quant::{BlockTable, PagedTable};
use crate::{Error, Result};

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
    /// The block table of a step over a paged cache (`None` for a contiguous one): its page
    /// indices go to the device (`max_pages` entries per sequence: the call's own width when
    /// eager, the width fixed at capture for a graph, padded with -1); its page counts
    /// stay on the host (the kernels never read them: the host checks every length against
    /// them before launching).
    pub block_table: Option<PagedTable>,
}

/// `table` with `width` entries per sequence for `batch` sequences (a captured graph's fixed
/// width): each sequence's entries are copied and the rest filled with -1 (entries past a
/// sequence's pages are never read). A table wider than `width` is `CapacityExceeded`, naming
/// both widths; one whose size or page counts do not fit its own width is `BadInput`.
pub(crate) fn widen_table(table: &PagedTable, batch: usize, width: usize) -> Result<PagedTable> {
    if table.max_pages > width {
        return Err(Error::CapacityExceeded(format!(
            "graph step: the block table has {} pages per sequence, wider than the {width} the \
             graph was captured for",
            table.max_pages
        )));
    }
    if table.table.len() != batch.saturating_mul(table.max_pages)
        || table.page_count.len() != batch
        || table.page_count.iter().any(|&c| c > table.max_pages)
    {
        return Err(Error::bad_input(format!(
            "block table: {} entries and {} page counts do not make {batch} sequences of at most \
             {} pages",
            table.table.len(),
            table.page_count.len(),
            table.max_pages
        )));
    }
    let mut out = vec![-1i32; batch * width];
    if table.max_pages > 0 {
        for (dst, src) in out
            .chunks_exact_mut(width)
            .zip(table.table.chunks_exact(table.max_pages))
        {
            dst[..table.max_pages].copy_from_slice(src);
        }
    }
    Ok(PagedTable::new(
        table.page_size,
        width,
        out,
        table.page_count.clone(),
    ))
}

/// Whether two block tables address the same pool rows for every position a call can touch:
/// the same page size and page counts, and the same first `page_count[b]` entries of each
/// sequence (entries past a sequence's pages are never read, so the widths may differ).
pub(crate) fn same_pages(a: &PagedTable, b: &PagedTable) -> bool {
    /// Each sequence's owned entries (None for a table of the wrong size).
    fn owned(t: &PagedTable) -> Option<Vec<&[i32]>> {
        if t.max_pages == 0 || t.table.len() != t.page_count.len() * t.max_pages {
            return None;
        }
        t.table
            .chunks_exact(t.max_pages)
            .zip(&t.page_count)
            .map(|(r, &c)| r.get(..c))
            .collect()
    }
    a.page_size == b.page_size
        && a.page_count == b.page_count
        && owned(a).is_some_and(|ra| owned(b).is_some_and(|rb| ra == rb))
}

/// Byte offsets of each table in the staged region.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StepLayout {
    pub ids: usize,
    pub positions: usize,
    pub past_len: usize,
    pub mask: usize,
    pub freqs: Vec<usize>,
    pub block_table: usize,
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
        let block_table = place(4 * self.block_table.as_ref().map_or(0, |t| t.table.len()));
        StepLayout {
            ids,
            positions,
            past_len,
            mask,
            freqs,
            block_table,
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
        if let Some(t) = &self.block_table {
            put(
                out,
                layout.block_table,
                t.table.iter().map(|v| v.to_le_bytes()),
            );
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

    /// The device copy of a block table's page indices, when `t` is the staged table (its
    /// indices and page counts the staged slices, of the staged width and page size).
    pub fn block_table(&self, t: &BlockTable<'_>) -> Option<*const i32> {
        let s = self.tables.block_table.as_ref()?;
        (same(t.table, &s.table)
            && same(t.page_count, &s.page_count)
            && t.max_pages == s.max_pages
            && t.page_size == s.page_size)
            .then(|| self.at(self.layout.block_table))
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
            block_table: None,
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
            block_table: None,
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

    /// A step of two sequences over a paged cache: pages of 4, 3 entries per sequence.
    fn paged_step() -> StepTables {
        StepTables {
            ids: vec![3, 4],
            positions: vec![5, 1],
            past_len: vec![5, 1],
            mask: None,
            mask_stride: 0,
            freqs: vec![Some(vec![1.0, 0.5, 0.25])],
            plan_max_past: 10,
            block_table: Some(PagedTable::new(4, 3, vec![7, 2, -1, 5, -1, -1], vec![2, 1])),
        }
    }

    #[test]
    fn the_block_table_is_placed_last_and_written_as_int32() {
        let t = paged_step();
        let l = t.layout();
        assert_eq!(l.block_table % TABLE_ALIGN, 0);
        assert!(l.block_table >= l.freqs[0] + 12);
        assert!(l.bytes >= l.block_table + 4 * 6);
        let mut b = vec![0u8; l.bytes];
        t.write(&l, &mut b);
        let i32_at = |i: usize| {
            let o = l.block_table + 4 * i;
            i32::from_le_bytes(b[o..o + 4].try_into().unwrap())
        };
        assert_eq!(
            (0..6).map(i32_at).collect::<Vec<_>>(),
            [7, 2, -1, 5, -1, -1]
        );
        // Without a table the region ends where it did.
        let mut plain = t.clone();
        plain.block_table = None;
        assert_eq!(plain.layout().block_table, l.block_table);
        assert!(plain.layout().bytes <= l.block_table.max(TABLE_ALIGN));
    }

    #[test]
    fn only_the_staged_block_table_is_recognised() {
        let t = paged_step();
        let layout = t.layout();
        let s = StagedStep {
            tables: t,
            layout,
            base: 1 << 20,
        };
        let staged = s.tables.block_table.as_ref().unwrap();
        let p = s.block_table(&staged.as_block_table()).unwrap();
        assert_eq!(p as usize, (1 << 20) + s.layout.block_table);
        // A copy of it, or the same entries read at another width or page size, is not it.
        let copy = staged.clone();
        assert!(s.block_table(&copy.as_block_table()).is_none());
        let mut other = staged.as_block_table();
        other.page_size = 2;
        assert!(s.block_table(&other).is_none());
        let mut narrower = staged.as_block_table();
        narrower.max_pages = 2;
        narrower.table = &staged.table[..4];
        assert!(s.block_table(&narrower).is_none());
        // A step without a table recognises none.
        let mut plain = paged_step();
        plain.block_table = None;
        let layout = plain.layout();
        let s2 = StagedStep {
            tables: plain,
            layout,
            base: 4096,
        };
        assert!(s2.block_table(&staged.as_block_table()).is_none());
    }

    #[test]
    fn widening_keeps_each_sequence_and_refuses_a_wider_table() {
        let t = PagedTable::new(4, 2, vec![7, 2, 5, 9], vec![2, 1]);
        let w = widen_table(&t, 2, 4).unwrap();
        assert_eq!(w.max_pages, 4);
        assert_eq!(w.table, [7, 2, -1, -1, 5, 9, -1, -1]);
        assert_eq!(w.page_count, [2, 1]);
        assert_eq!(w.page_size, 4);
        assert!(same_pages(&t, &w));
        assert_eq!(widen_table(&t, 2, 2).unwrap(), t);
        let e = widen_table(&t, 2, 1).unwrap_err();
        assert!(
            matches!(&e, Error::CapacityExceeded(m) if m.contains("2 pages per sequence") && m.contains("the 1 the graph was captured for")),
            "{e}"
        );
        // A table whose size or page counts do not fit its own width.
        assert!(widen_table(&t, 3, 4).is_err());
        let over = PagedTable::new(4, 2, vec![7, 2, 5, 9], vec![3, 1]);
        assert!(widen_table(&over, 2, 4).is_err());
    }

    #[test]
    fn same_pages_compares_only_the_pages_each_sequence_owns() {
        let a = PagedTable::new(4, 3, vec![7, 2, -1, 5, -1, -1], vec![2, 1]);
        // Other entries past the page counts, another width: the same rows.
        let b = PagedTable::new(4, 2, vec![7, 2, 5, 0], vec![2, 1]);
        assert!(same_pages(&a, &b));
        assert!(same_pages(&b, &a));
        // An owned entry, a page count or the page size differs: not the same.
        assert!(!same_pages(
            &a,
            &PagedTable::new(4, 2, vec![7, 3, 5, 0], vec![2, 1])
        ));
        assert!(!same_pages(
            &a,
            &PagedTable::new(4, 2, vec![7, 2, 5, 0], vec![2, 2])
        ));
        assert!(!same_pages(
            &a,
            &PagedTable::new(8, 2, vec![7, 2, 5, 0], vec![2, 1])
        ));
        // A table of the wrong size is never the same.
        assert!(!same_pages(
            &a,
            &PagedTable::new(4, 2, vec![7, 2, 5], vec![2, 1])
        ));
    }
}

//! What a captured decode step is fixed to (`layers::graph`, `model::graph`): batch, query
//! length, whether it carries a padding mask, the positions a sequence may reach and — over a
//! paged cache — the block table's page size and width. The host side of a graph step, kept
//! apart from the CUDA graph itself: checking a replay's parameters against the capture and the
//! cache, the template a capture records with, and the step tables a replay restages.

// The graphs that use this exist with the `cuda` feature only.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use std::ops::Range;

use crate::arch::ArchParams;
use crate::cache::KvCache;
use crate::kv_quant::PagedTable;
use crate::layers::params::AttnParams;
use crate::workspace::StepTables;
use crate::{Error, Result};

/// Most query tokens per sequence a captured step takes (decode attention's limit).
pub const MAX_GRAPH_Q_LEN: usize = 16;

/// The pages of a step over a paged cache, fixed at capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PagedBound {
    /// Positions per page (the cache's).
    pub page_size: usize,
    /// Entries per sequence of the staged block table: every replay's table is restaged at this
    /// width, and a wider one is refused.
    pub width: usize,
    /// Pages in each layer's pool.
    pub num_pages: usize,
}

/// What a captured step is fixed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepShape {
    pub batch: usize,
    pub q_len: usize,
    /// Whether the step carries a padding mask (its rows then have `capacity` slots).
    pub masked: bool,
    /// The most positions a sequence reaches: the contiguous cache's capacity, or
    /// width · page_size over a paged cache. Past lengths go up to `capacity − q_len`.
    pub capacity: usize,
    /// The block table's bounds over a paged cache (`None`: a contiguous cache).
    pub pages: Option<PagedBound>,
}

impl StepShape {
    /// The shape of a step of `batch` sequences × `q_len` new tokens over `cache` (any mode,
    /// contiguous or paged). Over a paged cache `max_pages` is the block table width replays
    /// may use (default: the pool's page count, the most distinct pages a sequence can own);
    /// a contiguous cache takes none.
    pub(crate) fn new(
        batch: usize,
        q_len: usize,
        masked: bool,
        cache: &KvCache,
        max_pages: Option<usize>,
    ) -> Result<Self> {
        if batch == 0 || q_len == 0 || q_len > MAX_GRAPH_Q_LEN {
            return Err(Error::bad_input(format!(
                "graph capture: batch {batch} and query length {q_len} must be positive, the \
                 query length at most {MAX_GRAPH_Q_LEN} (a decode step)"
            )));
        }
        let (capacity, pages) = match (cache.page_size(), cache.num_pages()) {
            (Some(page_size), Some(num_pages)) => {
                let width = max_pages.unwrap_or(num_pages);
                if width == 0 {
                    return Err(Error::bad_input(
                        "graph capture: a block table of 0 pages per sequence",
                    ));
                }
                let capacity = width.checked_mul(page_size).ok_or_else(|| {
                    Error::bad_input(format!(
                        "graph capture: {width} pages of {page_size} positions overflow"
                    ))
                })?;
                // The capture records with one page set per sequence (nothing runs, but the
                // step's checks do): the pool must hold them apart.
                let need = batch.saturating_mul(q_len.div_ceil(page_size));
                if need > num_pages {
                    return Err(Error::CapacityExceeded(format!(
                        "graph capture: {batch} sequences × {q_len} new tokens need {need} pages of \
                         {page_size} positions, the pool has {num_pages}"
                    )));
                }
                let bound = PagedBound {
                    page_size,
                    width,
                    num_pages,
                };
                (capacity, Some(bound))
            }
            _ => {
                if max_pages.is_some() {
                    return Err(Error::bad_input(
                        "graph capture: a block table width is for a paged KV cache; this one \
                         is contiguous",
                    ));
                }
                if cache.batch != batch {
                    return Err(Error::bad_input(format!(
                        "graph capture: the KV cache is for batch {}, the step has {batch}",
                        cache.batch
                    )));
                }
                (cache.capacity, None)
            }
        };
        if q_len > capacity {
            return Err(Error::CapacityExceeded(format!(
                "graph capture: {q_len} new tokens exceed the cache capacity {capacity}"
            )));
        }
        Ok(StepShape {
            batch,
            q_len,
            masked,
            capacity,
            pages,
        })
    }

    /// The largest past length a replay may have.
    pub(crate) fn max_past(&self) -> usize {
        self.capacity - self.q_len
    }

    /// A step of this shape at past length 0 (what the capture records with): over a paged
    /// cache, sequence b owns pages b·n … b·n + n − 1 (n: the pages q_len positions take) of a
    /// table of the captured width.
    pub(crate) fn template(&self) -> Result<AttnParams> {
        let mut p = AttnParams::new(self.batch, self.q_len);
        if let Some(pb) = self.pages {
            let n = self.q_len.div_ceil(pb.page_size);
            let mut table = vec![-1i32; self.batch * pb.width];
            for b in 0..self.batch {
                for i in 0..n {
                    table[b * pb.width + i] = i32::try_from(b * n + i).map_err(|_| {
                        Error::bad_input("graph capture: page index overflows int32")
                    })?;
                }
            }
            p = p.with_block_table(PagedTable::new(
                pb.page_size,
                pb.width,
                table,
                vec![n; self.batch],
            ));
        }
        if self.masked {
            p.with_attention_mask(&vec![1; self.batch * self.q_len], self.q_len)
        } else {
            Ok(p)
        }
    }

    /// Checks that `p` is a step of this shape: batch, query length, mask presence, a block
    /// table exactly over a paged cache (of its page size, at most the captured width), every
    /// past length within the bound.
    pub(crate) fn check(&self, p: &AttnParams) -> Result<()> {
        p.validate()?;
        match (&p.block_table, self.pages) {
            (Some(_), None) => {
                return Err(Error::bad_input(
                    "graph step: the call carries a block table, but the graph was captured \
                     over a contiguous KV cache",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::bad_input(
                    "graph step: the graph was captured over a paged KV cache; the step needs \
                     its block table (AttnParams::with_block_table)",
                ))
            }
            (Some(t), Some(pb)) => {
                if t.page_size != pb.page_size {
                    return Err(Error::bad_input(format!(
                        "graph step: the block table's pages hold {} positions, the paged KV \
                         cache's {}",
                        t.page_size, pb.page_size
                    )));
                }
                if t.max_pages > pb.width {
                    return Err(Error::CapacityExceeded(format!(
                        "graph step: the block table has {} pages per sequence, wider than the \
                         {} the graph was captured for",
                        t.max_pages, pb.width
                    )));
                }
            }
            (None, None) => {}
        }
        if p.batch != self.batch || p.q_len != self.q_len {
            return Err(Error::bad_input(format!(
                "graph step: batch {} × {} tokens, but the graph was captured for batch {} × {}",
                p.batch, p.q_len, self.batch, self.q_len
            )));
        }
        if p.mask.is_some() != self.masked {
            return Err(Error::bad_input(format!(
                "graph step: the graph was captured {} a padding mask, the step has {}",
                if self.masked { "with" } else { "without" },
                if p.mask.is_some() { "one" } else { "none" }
            )));
        }
        if let Some((b, &l)) = p
            .past_len
            .iter()
            .enumerate()
            .find(|(_, &l)| l > self.max_past())
        {
            return Err(Error::CapacityExceeded(format!(
                "graph step: sequence {b} has {l} past tokens; with {} new ones that exceeds the \
                 {} positions the graph was captured for",
                self.q_len, self.capacity
            )));
        }
        Ok(())
    }

    /// Checks a step (already [`check`](Self::check)ed) against the cache before anything is
    /// queued: over a contiguous cache, that layers `layers` hold every past position read;
    /// over a paged one, the block table against the pool (every page touched inside it, no
    /// pool row written twice).
    pub(crate) fn check_cache(
        &self,
        cache: &KvCache,
        p: &AttnParams,
        layers: Range<usize>,
    ) -> Result<()> {
        match &p.block_table {
            Some(t) => cache.check_block_table(Some(&t.as_block_table()), &p.past_len, p.q_len),
            None => layers
                .into_iter()
                .try_for_each(|l| cache.check_positions(l, &p.past_len, p.q_len)),
        }
    }

    /// Records the positions a replayed step wrote into layers `layers` of a contiguous cache
    /// (a paged cache keeps no such record).
    pub(crate) fn record(
        &self,
        cache: &mut KvCache,
        p: &AttnParams,
        layers: Range<usize>,
    ) -> Result<()> {
        if self.pages.is_some() {
            return Ok(());
        }
        layers
            .into_iter()
            .try_for_each(|l| cache.record_written(l, &p.past_len, p.q_len))
    }

    /// The step tables of `p` as the graph reads them: planned for the bound, the mask at the
    /// captured stride, the block table at the captured width.
    pub(crate) fn tables(
        &self,
        ids: &[u32],
        p: &AttnParams,
        arch: &ArchParams,
    ) -> Result<StepTables> {
        p.step_tables(
            ids,
            &arch.rotary,
            Some(self.max_past()),
            self.masked.then_some(self.capacity),
            self.pages.map(|pb| pb.width),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_quant::KvCacheMode;
    use crate::tensor::{DType, Device};

    fn err<T: std::fmt::Debug>(r: Result<T>) -> Error {
        r.unwrap_err()
    }

    /// A CPU pool of `pages` pages of 4 positions, 2 layers of 2 KV heads × 32, in `mode`.
    fn pool(pages: usize, mode: KvCacheMode) -> KvCache {
        KvCache::paged(2, pages, 4, 2, 32, DType::F32, Device::Cpu, mode).unwrap()
    }

    fn arch() -> ArchParams {
        ArchParams::from_dir(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt_neox"),
        )
        .unwrap()
    }

    #[test]
    fn a_quantized_contiguous_cache_is_captured_like_a_native_one() {
        for mode in KvCacheMode::all() {
            let c =
                KvCache::with_mode(2, 3, 40, 2, 32, DType::F32, Device::Cpu, mode.clone()).unwrap();
            let sh = StepShape::new(3, 2, true, &c, None).unwrap();
            assert_eq!((sh.capacity, sh.max_past(), sh.pages), (40, 38, None));
            let t = sh.template().unwrap();
            t.validate().unwrap();
            assert!(t.block_table.is_none() && t.mask.is_some());
            assert!(err(StepShape::new(2, 1, false, &c, None))
                .to_string()
                .contains("batch 3"));
            assert!(err(StepShape::new(3, 1, false, &c, Some(4)))
                .to_string()
                .contains("contiguous"));
        }
    }

    #[test]
    fn a_paged_step_is_bounded_by_the_table_width() {
        let c = pool(20, KvCacheMode::Q8);
        // Default width: the pool's page count.
        let sh = StepShape::new(3, 2, false, &c, None).unwrap();
        let pb = PagedBound {
            page_size: 4,
            width: 20,
            num_pages: 20,
        };
        assert_eq!((sh.capacity, sh.pages), (80, Some(pb)));
        // A narrower width bounds the positions.
        let sh = StepShape::new(3, 5, true, &c, Some(6)).unwrap();
        assert_eq!((sh.capacity, sh.max_past()), (24, 19));
        // The template: two pages per sequence, distinct, at the captured width; it passes
        // every check a forward makes against the pool.
        let t = sh.template().unwrap();
        t.validate().unwrap();
        let bt = t.block_table.as_ref().unwrap();
        assert_eq!((bt.max_pages, bt.page_size), (6, 4));
        assert_eq!(bt.page_count, [2, 2, 2]);
        assert_eq!(&bt.table[..8], [0, 1, -1, -1, -1, -1, 2, 3]);
        c.check_block_table(Some(&bt.as_block_table()), &t.past_len, t.q_len)
            .unwrap();
        sh.check(&t).unwrap();
        sh.check_cache(&c, &t, 0..2).unwrap();
        // No width of 0; a pool too small for one step of its own pages per sequence; a
        // query longer than the width's positions.
        assert!(err(StepShape::new(3, 1, false, &c, Some(0)))
            .to_string()
            .contains("0 pages"));
        let e = err(StepShape::new(
            3,
            16,
            false,
            &pool(8, KvCacheMode::Native),
            None,
        ));
        assert!(
            matches!(&e, Error::CapacityExceeded(m) if m.contains("need 12 pages") && m.contains("the pool has 8")),
            "{e}"
        );
        assert!(matches!(
            err(StepShape::new(1, 9, false, &c, Some(2))),
            Error::CapacityExceeded(_)
        ));
    }

    #[test]
    fn a_paged_step_is_checked_against_the_capture_and_the_pool() {
        let mut c = pool(12, KvCacheMode::Native);
        let sh = StepShape::new(2, 1, false, &c, Some(4)).unwrap();
        let step =
            |past: Vec<usize>, t: PagedTable| AttnParams::with_past(2, 1, past).with_block_table(t);
        let ok = step(
            vec![5, 0],
            PagedTable::new(4, 2, vec![9, 3, 4, -1], vec![2, 1]),
        );
        sh.check(&ok).unwrap();
        sh.check_cache(&c, &ok, 0..2).unwrap();
        // No table; another page size; a table wider than the capture's (named, with both
        // widths); past the captured positions.
        let e = err(sh.check(&AttnParams::with_past(2, 1, vec![5, 0])));
        assert!(e.to_string().contains("needs its block table"), "{e}");
        let e = err(sh.check(&step(
            vec![1, 0],
            PagedTable::new(2, 2, vec![9, 3, 4, 5], vec![1, 1]),
        )));
        assert!(e.to_string().contains("hold 2 positions"), "{e}");
        let wide = PagedTable::new(4, 5, (0..10).collect(), vec![1, 1]);
        let e = err(sh.check(&step(vec![1, 0], wide)));
        assert!(
            matches!(&e, Error::CapacityExceeded(m) if m.contains("5 pages per sequence") && m.contains("the 4 the graph was captured for")),
            "{e}"
        );
        let four = PagedTable::new(4, 4, (0..8).collect(), vec![4, 1]);
        let e = err(sh.check(&step(vec![16, 0], four)));
        assert!(matches!(e, Error::CapacityExceeded(_)), "{e}");
        // The pool: a page outside it; two sequences writing one row.
        let e = err(sh.check_cache(
            &c,
            &step(
                vec![5, 0],
                PagedTable::new(4, 2, vec![9, 12, 4, -1], vec![2, 1]),
            ),
            0..2,
        ));
        assert!(
            e.to_string().contains("outside the pool of 12 pages"),
            "{e}"
        );
        let e = err(sh.check_cache(
            &c,
            &step(vec![1, 1], PagedTable::new(4, 1, vec![3, 3], vec![1, 1])),
            0..2,
        ));
        assert!(e.to_string().contains("both write pool row"), "{e}");
        // A paged cache keeps no record of what it holds.
        sh.record(&mut c, &ok, 0..2).unwrap();
        assert!(c.held(0).unwrap().is_empty());
        // The step's tables: planned for the bound, its table at the captured width.
        let tables = sh.tables(&[], &ok, &arch()).unwrap();
        assert_eq!(tables.plan_max_past, 15);
        let bt = tables.block_table.unwrap();
        assert_eq!(
            (bt.max_pages, bt.page_count.as_slice()),
            (4, &[2usize, 1][..])
        );
        assert_eq!(bt.table, [9, 3, -1, -1, 4, -1, -1, -1]);
    }

    #[test]
    fn a_contiguous_step_refuses_a_table_and_records_what_it_wrote() {
        let mut c =
            KvCache::with_mode(2, 2, 10, 2, 32, DType::F32, Device::Cpu, KvCacheMode::Q4).unwrap();
        let sh = StepShape::new(2, 1, false, &c, None).unwrap();
        let t = PagedTable::new(4, 1, vec![0, 1], vec![1, 1]);
        let e = err(sh.check(&AttnParams::with_past(2, 1, vec![0, 0]).with_block_table(t)));
        assert!(e.to_string().contains("contiguous"), "{e}");
        let p = AttnParams::with_past(2, 1, vec![0, 0]);
        sh.check_cache(&c, &p, 0..2).unwrap();
        sh.record(&mut c, &p, 0..2).unwrap();
        assert_eq!(c.held(1).unwrap(), &[1, 1]);
        let e = err(sh.check_cache(&c, &AttnParams::with_past(2, 1, vec![2, 1]), 0..2));
        assert!(e.to_string().contains("only 1 were written"), "{e}");
        let tables = sh.tables(&[], &p, &arch()).unwrap();
        assert!(tables.block_table.is_none());
        assert_eq!(tables.plan_max_past, 9);
    }
}

//! `KvCache`: per-layer K and V storage with a capacity, laid out
//! [batch, capacity, kv_heads · head_dim] so one token's keys are contiguous.
//!
//! The cache records, per layer and sequence, how many positions it holds. A forward whose
//! `past_len` would read slots never written is an error naming the sequence and lengths.
//! Rewinding is allowed: a `past_len` shorter than what is held (as speculative decoding does
//! when it rejects drafted tokens) reads the first `past_len` slots and overwrites the rest,
//! and the layer then holds `past_len + q_len`.
//!
//! A cache made [`with_mode`](KvCache::with_mode) a quantized [`KvCacheMode`] holds, per layer,
//! [`QuantLayer`] pages (codes and scales, see `kv_quant`) instead of K/V tensors of the dtype.
//!
//! A cache made [`paged`](KvCache::paged) is a vLLM-style pool per layer: `num_pages` pages of
//! `page_size` positions ([`QuantLayer`]s of num_pages × page_size rows, in any mode; `Native`
//! pages hold the dtype's values). It has no sequences of its own: each call's
//! [`crate::AttnParams`] carries the block table its caller (a serving engine) owns and
//! fills, which says which pages hold each sequence's positions; the same table addresses
//! every layer's pool. The per-sequence record of held positions does not apply to pages the
//! caller owns (several sequences may share a prefix's pages): instead every call's table is
//! checked against the pool before anything is written (`BlockTable::check`: the table's
//! size, page counts, each sequence's positions within its pages, every page it touches
//! inside the pool, no pool row written twice in one call). What a page holds is the
//! caller's to know: reading a page never written reads zeros (or what was last written
//! there). For a paged cache [`batch`](KvCache::batch) is 0 (any batch: the call's table
//! says) and [`capacity`](KvCache::capacity) the positions of a whole pool,
//! num_pages · page_size, the most one sequence can reach.

use crate::arch::ArchParams;
use crate::kv_quant::{BlockTable, KvCacheMode, QuantLayer, QuantPages};
use crate::tensor::{DType, Device, Tensor};
use crate::{Error, Result};

#[derive(Debug)]
/// A KV cache: K and V of every layer, with what each sequence holds (see the module docs).
pub struct KvCache {
    /// Sequences (0 for a paged cache: each call's block table gives its own).
    pub batch: usize,
    /// Positions each sequence can hold (for a paged cache, the pool's num_pages · page_size).
    pub capacity: usize,
    /// Key/value heads per position.
    pub kv_heads: usize,
    /// Features per head.
    pub head_dim: usize,
    layers: Vec<(Tensor, Tensor)>,
    /// Quantized pages per layer (a quantized mode; `layers` is then empty).
    quant: Vec<QuantLayer>,
    mode: KvCacheMode,
    /// The dtype the cache was made for (the native storage; what a quantized mode reads back as).
    dtype: DType,
    /// Where the storage lives.
    device: Device,
    /// Positions held, per layer and sequence (empty rows for a paged cache).
    held: Vec<Vec<usize>>,
    /// (page_size, num_pages) of a paged cache, whose `quant` holds each layer's pool.
    paging: Option<(usize, usize)>,
}

impl KvCache {
    /// A cache of `num_layers` layers, each K and V [batch, capacity, kv_heads·head_dim] of `dtype` on `device`, zero-filled and holding nothing.
    pub fn new(
        num_layers: usize,
        batch: usize,
        capacity: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        if batch == 0 || capacity == 0 || kv_heads == 0 || head_dim == 0 {
            return Err(Error::bad_input(format!(
                "KV cache: batch {batch}, capacity {capacity}, kv_heads {kv_heads} and head_dim {head_dim} must all be positive"
            )));
        }
        if !dtype.is_float() {
            return Err(Error::bad_input(format!(
                "KV cache: dtype {dtype} is not a float type"
            )));
        }
        let shape = [batch, capacity, kv_heads * head_dim];
        let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        if n.is_none_or(|n| n.checked_mul(dtype.size()).is_none()) {
            return Err(Error::bad_input(format!(
                "KV cache: shape {shape:?} overflows"
            )));
        }
        let layers: Vec<(Tensor, Tensor)> = (0..num_layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(&shape, dtype, device)?,
                    Tensor::zeros(&shape, dtype, device)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            batch,
            capacity,
            kv_heads,
            head_dim,
            held: vec![vec![0; batch]; layers.len()],
            layers,
            quant: Vec::new(),
            mode: KvCacheMode::Native,
            paging: None,
            dtype,
            device,
        })
    }

    /// A cache storing K and V in `mode` (`Native`: the same as [`new`](Self::new)). `dtype` is
    /// the dtype the layer computes in (the native storage, and what a quantized mode is read
    /// back as). Errors name a mode that cannot store these heads (see `KvCacheMode::check`).
    pub fn with_mode(
        num_layers: usize,
        batch: usize,
        capacity: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        device: Device,
        mode: KvCacheMode,
    ) -> Result<Self> {
        if !mode.is_quantized() {
            return Self::new(
                num_layers, batch, capacity, kv_heads, head_dim, dtype, device,
            );
        }
        // The size checks of a native cache of one layer (no storage of the dtype is made).
        Self::new(0, batch, capacity, kv_heads, head_dim, dtype, device)?;
        mode.check(num_layers, kv_heads, head_dim, dtype)?;
        let (fk, fv) = mode.formats();
        let quant = (0..num_layers)
            .map(|l| {
                let (ks, vs) = mode.head_scales(l, kv_heads);
                Ok(QuantLayer {
                    k: QuantPages::new(fk, batch, capacity, kv_heads, head_dim, &ks, device)?,
                    v: QuantPages::new(fv, batch, capacity, kv_heads, head_dim, &vs, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            batch,
            capacity,
            kv_heads,
            head_dim,
            held: vec![vec![0; batch]; num_layers],
            layers: Vec::new(),
            quant,
            mode,
            paging: None,
            dtype,
            device,
        })
    }

    /// A paged cache (see the module docs): per layer, a pool of `num_pages` pages of
    /// `page_size` positions of K and V in `mode` (`Native`: values of `dtype`; a quantized
    /// mode: codes and scales, read back as `dtype`). Calls address it through the block table
    /// their [`crate::AttnParams`] carry. On the CPU a native pool holds f32 values (the
    /// reference path): another `dtype` there is `Unsupported`. Errors name a mode that cannot
    /// store these heads (see `KvCacheMode::check`).
    pub fn paged(
        num_layers: usize,
        num_pages: usize,
        page_size: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        device: Device,
        mode: KvCacheMode,
    ) -> Result<Self> {
        if num_pages == 0 || page_size == 0 {
            return Err(Error::bad_input(format!(
                "paged KV cache: {num_pages} pages of {page_size} positions: both must be positive"
            )));
        }
        if num_pages > i32::MAX as usize {
            return Err(Error::bad_input(format!(
                "paged KV cache: {num_pages} pages; block table entries are int32, at most {}",
                i32::MAX
            )));
        }
        // The size checks of a native cache of one layer (no storage is made).
        Self::new(0, num_pages, page_size, kv_heads, head_dim, dtype, device)?;
        if !mode.is_quantized() && device == Device::Cpu && dtype != DType::F32 {
            return Err(Error::unsupported(format!(
                "paged KV cache: native pages on the CPU hold f32 values (the reference path \
                 computes in f32), not {dtype}"
            )));
        }
        let quant = (0..num_layers)
            .map(|l| {
                QuantLayer::new(
                    &mode, l, num_layers, num_pages, page_size, kv_heads, head_dim, dtype, device,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            batch: 0,
            capacity: num_pages * page_size,
            kv_heads,
            head_dim,
            held: vec![Vec::new(); num_layers],
            layers: Vec::new(),
            quant,
            mode,
            paging: Some((page_size, num_pages)),
            dtype,
            device,
        })
    }

    /// [`paged`](Self::paged) for every layer of a model.
    pub fn paged_for_model(
        arch: &ArchParams,
        num_pages: usize,
        page_size: usize,
        dtype: DType,
        device: Device,
        mode: KvCacheMode,
    ) -> Result<Self> {
        Self::paged(
            arch.num_layers,
            num_pages,
            page_size,
            arch.kv_heads,
            arch.head_dim,
            dtype,
            device,
            mode,
        )
    }

    /// Whether the cache is a paged pool (made with [`paged`](Self::paged)).
    pub fn is_paged(&self) -> bool {
        self.paging.is_some()
    }

    /// Positions per page of a paged cache (None for a contiguous one).
    pub fn page_size(&self) -> Option<usize> {
        self.paging.map(|(ps, _)| ps)
    }

    /// Pages in each layer's pool of a paged cache (None for a contiguous one).
    pub fn num_pages(&self) -> Option<usize> {
        self.paging.map(|(_, n)| n)
    }

    /// Checks a call's block table against the cache before anything is written: a table for
    /// a contiguous cache, a paged cache without one and a page size other than the cache's
    /// are errors naming that; then `BlockTable::check` over the pool (the table's size for
    /// `past_len.len()` sequences, page counts, each sequence's positions within its pages,
    /// every page the call touches inside the pool, no pool row written twice). A contiguous
    /// cache and no table pass.
    pub fn check_block_table(
        &self,
        table: Option<&BlockTable<'_>>,
        past_len: &[usize],
        q_len: usize,
    ) -> Result<()> {
        match (self.check_table_kind(table)?, table) {
            (Some(num_pages), Some(t)) => t.check(past_len.len(), num_pages, past_len, q_len, true),
            _ => Ok(()),
        }
    }

    /// The first part of [`check_block_table`](Self::check_block_table): whether the call
    /// has a table exactly when the cache is paged, with the cache's page size. Returns the
    /// pool's page count for a paged cache.
    pub(crate) fn check_table_kind(&self, table: Option<&BlockTable<'_>>) -> Result<Option<usize>> {
        match (self.paging, table) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(Error::bad_input(
                "the call carries a block table but the KV cache is contiguous (a block table \
                 addresses a paged cache, KvCache::paged)",
            )),
            (Some(_), None) => Err(Error::bad_input(
                "the KV cache is paged: the call needs a block table (AttnParams::with_block_table)",
            )),
            (Some((page_size, _)), Some(t)) if t.page_size != page_size => {
                Err(Error::bad_input(format!(
                    "block table: pages of {} positions, but the paged KV cache's pages hold {page_size}",
                    t.page_size
                )))
            }
            (Some((_, num_pages)), Some(_)) => Ok(Some(num_pages)),
        }
    }

    /// How K and V are stored.
    pub fn mode(&self) -> &KvCacheMode {
        &self.mode
    }

    /// The dtype the cache was made for: the storage of a native cache, what a quantized one
    /// is read back as.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Where the cache's storage lives.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Bytes the cache's storage takes: K and V of every layer, or of every layer's pool for a
    /// paged cache (values, or codes, run scales and E4M3 head scales).
    pub fn bytes(&self) -> usize {
        let t = |t: &Tensor| t.numel() * t.dtype().size();
        let pages = |p: &QuantPages| {
            t(&p.codes) + p.scales.as_ref().map_or(0, t) + p.head_scales.as_ref().map_or(0, t)
        };
        self.layers.iter().map(|(k, v)| t(k) + t(v)).sum::<usize>()
            + self
                .quant
                .iter()
                .map(|l| pages(&l.k) + pages(&l.v))
                .sum::<usize>()
    }

    /// The pages of one layer: a quantized mode's, or a paged cache's pool (any mode).
    pub fn quant_layer_mut(&mut self, layer: usize) -> Result<&mut QuantLayer> {
        let (n, mode) = (self.held.len(), self.mode.name());
        if self.quant.is_empty() {
            return Err(Error::bad_input(format!(
                "KV cache mode {mode} is not quantized: use layer_mut"
            )));
        }
        self.quant.get_mut(layer).ok_or_else(|| {
            Error::bad_input(format!("KV cache has {n} layers, layer {layer} requested"))
        })
    }

    /// The pages of one layer: a quantized mode's, or a paged cache's pool (any mode).
    pub fn quant_layer(&self, layer: usize) -> Result<&QuantLayer> {
        let (n, mode) = (self.held.len(), self.mode.name());
        if self.quant.is_empty() {
            return Err(Error::bad_input(format!(
                "KV cache mode {mode} is not quantized: use layer"
            )));
        }
        self.quant.get(layer).ok_or_else(|| {
            Error::bad_input(format!("KV cache has {n} layers, layer {layer} requested"))
        })
    }

    /// A cache for every layer of a model.
    pub fn for_model(
        arch: &ArchParams,
        batch: usize,
        capacity: usize,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        Self::new(
            arch.num_layers,
            batch,
            capacity,
            arch.kv_heads,
            arch.head_dim,
            dtype,
            device,
        )
    }

    /// Bytes a cache of these sizes takes (both K and V, all layers).
    pub fn bytes_needed(
        num_layers: usize,
        batch: usize,
        capacity: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
    ) -> usize {
        // Saturating: a size that does not fit in usize cannot be allocated either.
        [
            2,
            num_layers,
            batch,
            capacity,
            kv_heads,
            head_dim,
            dtype.size(),
        ]
        .iter()
        .fold(1usize, |a, &b| a.saturating_mul(b))
    }

    /// Bytes a [`paged`](Self::paged) cache of these sizes takes in `mode` (K and V pools of
    /// every layer).
    pub fn bytes_needed_paged(
        num_layers: usize,
        num_pages: usize,
        page_size: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        mode: &KvCacheMode,
    ) -> usize {
        // A pool is laid out as a contiguous cache of num_pages sequences × page_size.
        Self::bytes_needed_mode(
            num_layers, num_pages, page_size, kv_heads, head_dim, dtype, mode,
        )
    }

    /// Bytes a cache of these sizes takes in `mode` (codes, run scales and E4M3 head scales of
    /// K and V, all layers): what [`bytes`](Self::bytes) reports once it is made.
    pub fn bytes_needed_mode(
        num_layers: usize,
        batch: usize,
        capacity: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        mode: &KvCacheMode,
    ) -> usize {
        if !mode.is_quantized() {
            return Self::bytes_needed(num_layers, batch, capacity, kv_heads, head_dim, dtype);
        }
        let kv_dim = kv_heads.saturating_mul(head_dim);
        let (fk, fv) = mode.formats();
        let row = QuantPages::bytes_per_token(fk, kv_dim)
            .saturating_add(QuantPages::bytes_per_token(fv, kv_dim));
        let heads = match mode {
            KvCacheMode::Fp8E4M3 { .. } => [2, num_layers, kv_heads, 4]
                .iter()
                .fold(1usize, |a, &b| a.saturating_mul(b)),
            _ => 0,
        };
        [num_layers, batch, capacity, row]
            .iter()
            .fold(1usize, |a, &b| a.saturating_mul(b))
            .saturating_add(heads)
    }

    /// Layers in the cache.
    pub fn num_layers(&self) -> usize {
        self.held.len()
    }

    /// K and V of one layer (a native cache; a quantized one has [`quant_layer`](Self::quant_layer)).
    pub fn layer_mut(&mut self, layer: usize) -> Result<(&mut Tensor, &mut Tensor)> {
        if self.is_paged() {
            return Err(Error::bad_input(
                "the KV cache is paged: its pools are quant_layer_mut",
            ));
        }
        if self.mode.is_quantized() {
            return Err(Error::bad_input(format!(
                "KV cache mode {} stores quantized pages: use quant_layer_mut",
                self.mode.name()
            )));
        }
        let n = self.layers.len();
        self.layers
            .get_mut(layer)
            .map(|(k, v)| (k, v))
            .ok_or_else(|| {
                Error::bad_input(format!("KV cache has {n} layers, layer {layer} requested"))
            })
    }

    /// How many positions each sequence holds in `layer` (empty for a paged cache, whose
    /// pages the caller tracks).
    pub fn held(&self, layer: usize) -> Result<&[usize]> {
        let n = self.held.len();
        self.held.get(layer).map(Vec::as_slice).ok_or_else(|| {
            Error::bad_input(format!("KV cache has {n} layers, layer {layer} requested"))
        })
    }

    /// Checks that a call reading `past_len[b]` positions of each sequence from `layer` and
    /// writing `q_len` after them stays within what was written and the capacity.
    /// A paged cache has no such record: use [`check_block_table`](Self::check_block_table).
    pub fn check_positions(&self, layer: usize, past_len: &[usize], q_len: usize) -> Result<()> {
        let held = self.held(layer)?;
        if self.is_paged() {
            return Err(Error::bad_input(
                "the KV cache is paged: a call's positions are checked against its block table \
                 (check_block_table), not a record of what each sequence holds",
            ));
        }
        if past_len.len() != self.batch {
            return Err(Error::bad_input(format!(
                "KV cache is for batch {}, the call gives {} past lengths",
                self.batch,
                past_len.len()
            )));
        }
        for (b, (&p, &h)) in past_len.iter().zip(held).enumerate() {
            if p > h {
                return Err(Error::bad_input(format!(
                    "KV cache layer {layer}, sequence {b}: the call reads {p} past positions but \
                     only {h} were written"
                )));
            }
            if p.checked_add(q_len).is_none_or(|end| end > self.capacity) {
                return Err(Error::CapacityExceeded(format!(
                    "KV cache layer {layer}, sequence {b}: past length {p} + {q_len} new tokens \
                     exceeds the capacity {}",
                    self.capacity
                )));
            }
        }
        Ok(())
    }

    /// Records that `layer` now holds `past_len[b] + q_len` positions of each sequence (after
    /// a call wrote them; a shorter past length rewinds).
    pub fn record_written(&mut self, layer: usize, past_len: &[usize], q_len: usize) -> Result<()> {
        self.check_positions(layer, past_len, q_len)?;
        for (h, &p) in self.held[layer].iter_mut().zip(past_len) {
            *h = p + q_len;
        }
        Ok(())
    }

    /// What every layer holds (a graph capture, which records without computing, puts it back
    /// with `restore_held`).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn held_all(&self) -> Vec<Vec<usize>> {
        self.held.clone()
    }

    /// Puts back what `held_all` returned.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn restore_held(&mut self, held: Vec<Vec<usize>>) {
        if held.len() == self.held.len() {
            self.held = held;
        }
    }

    /// Forgets every position (the storage is kept and overwritten by the next calls); nothing
    /// for a paged cache, whose pages the caller tracks.
    pub fn clear(&mut self) {
        for h in &mut self.held {
            h.fill(0);
        }
    }

    /// K and V of one layer (a native cache; a quantized one has [`quant_layer`](Self::quant_layer)).
    pub fn layer(&self, layer: usize) -> Result<(&Tensor, &Tensor)> {
        if self.is_paged() {
            return Err(Error::bad_input(
                "the KV cache is paged: its pools are quant_layer",
            ));
        }
        if self.mode.is_quantized() {
            return Err(Error::bad_input(format!(
                "KV cache mode {} stores quantized pages: use quant_layer",
                self.mode.name()
            )));
        }
        let n = self.layers.len();
        self.layers.get(layer).map(|(k, v)| (k, v)).ok_or_else(|| {
            Error::bad_input(format!("KV cache has {n} layers, layer {layer} requested"))
        })
    }
}

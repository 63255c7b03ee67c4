//! The paged KV cache through the C ABI, from Rust on the CPU:
//! - `paradec_cache_create_paged` (model) and `paradec_cache_create_paged_for_layer` (layer)
//!   make a pool per layer in any mode; `paradec_cache_describe` and `paradec_cache_bytes`
//!   say what it is and takes;
//! - `paradec_model_forward_paged`, `paradec_layer_forward_paged` and
//!   `paradec_layer_forward_interm_paged`, each given the call's block table, compute to the
//!   bit what the contiguous cache computes through `paradec_model_forward` /
//!   `paradec_layer_forward(_interm)` in the same mode (a batch of two sequences of different
//!   lengths, a left-padded batch under a mask, pages handed out in a scrambled order), and a
//!   prompt's pages written once are shared by two sequences;
//! - `paradec_workspace_bytes_paged` is `Workspace::bytes_needed_paged` plus the forward's
//!   outputs, as `paradec_model_memory` counts them;
//! - every misuse returns its status, names the culprit and writes nothing (a paged cache
//!   without a table, a table with a contiguous cache, table tensors of the wrong dtype, shape
//!   or memory, page ids outside the pool, lengths past a sequence's pages, …), and
//!   `paradec_model_capture_decode` refuses a paged cache, naming the `_paged` capture;
//! - `paradec_model_capture_decode_paged` and `paradec_model_graph_step_paged` check every
//!   argument (a contiguous cache, the table width against the pools, the step's bounds, the
//!   block table's tensors) before they need a device, which this build and machine lack.

mod common;

use std::ffi::{c_void, CStr, CString};
use std::path::Path;
use std::ptr;

use common::{padded_schedule, schedule_len, staggered_schedule, PagedStep, Pager};
use paradec::capi::*;
use paradec::kv_quant::RUN;
use paradec::{ArchParams, DType, KvCache, KvCacheMode, PagedTable, Workspace};

use paradec_status::*;

const CPU: paradec_device = paradec_device {
    device_type: PARADEC_DEVICE_CPU,
    device_id: 0,
};

fn dt(d: DType) -> paradec_dtype {
    let (code, bits) = match d {
        DType::F32 => (PARADEC_DTYPE_FLOAT, 32),
        DType::F16 => (PARADEC_DTYPE_FLOAT, 16),
        DType::I32 => (PARADEC_DTYPE_INT, 32),
        DType::I64 => (PARADEC_DTYPE_INT, 64),
        other => panic!("{other}"),
    };
    paradec_dtype {
        code,
        bits,
        lanes: 1,
    }
}

fn last_error() -> String {
    // SAFETY: paradec_last_error returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(paradec_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// A call that must fail with `want`, its message mentioning `needle`.
#[track_caller]
fn fails(got: paradec_status, want: paradec_status, needle: &str) {
    let msg = last_error();
    assert_eq!(got, want, "message: {msg}");
    assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
}

#[track_caller]
fn ok(s: paradec_status) {
    assert_eq!(s, PARADEC_OK, "{}", last_error());
}

/// Host memory with a descriptor (8-byte aligned words).
struct Buf {
    words: Vec<u64>,
    shape: Vec<i64>,
    dtype: DType,
    device: paradec_device,
}

impl Buf {
    fn new(dtype: DType, shape: &[usize], bytes: &[u8]) -> Buf {
        let mut words = vec![0u64; bytes.len().div_ceil(8).max(1)];
        // SAFETY: the words hold at least `bytes.len()` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast(), bytes.len())
        };
        Buf {
            words,
            shape: shape.iter().map(|&d| d as i64).collect(),
            dtype,
            device: CPU,
        }
    }
    fn f32(shape: &[usize], v: &[f32]) -> Buf {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Buf::new(DType::F32, shape, &b)
    }
    fn i64(shape: &[usize], v: &[i64]) -> Buf {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Buf::new(DType::I64, shape, &b)
    }
    fn i32(shape: &[usize], v: &[i32]) -> Buf {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Buf::new(DType::I32, shape, &b)
    }
    fn numel(&self) -> usize {
        self.shape.iter().product::<i64>() as usize
    }
    fn f32s(&self) -> Vec<f32> {
        (0..self.numel())
            .map(|i| f32::from_bits((self.words[i / 2] >> (32 * (i % 2))) as u32))
            .collect()
    }
    fn t(&mut self) -> paradec_tensor {
        paradec_tensor {
            data: self.words.as_mut_ptr() as *mut c_void,
            device: self.device,
            ndim: self.shape.len() as i32,
            dtype: dt(self.dtype),
            shape: self.shape.as_mut_ptr(),
            strides: ptr::null_mut(),
            byte_offset: 0,
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn code_of(mode: &KvCacheMode) -> i32 {
    match mode {
        KvCacheMode::Native => PARADEC_CACHE_MODE_NATIVE,
        KvCacheMode::Fp8E4M3 { .. } => PARADEC_CACHE_MODE_FP8_E4M3,
        KvCacheMode::Fp8E5M2 => PARADEC_CACHE_MODE_FP8_E5M2,
        KvCacheMode::Q8 => PARADEC_CACHE_MODE_Q8,
        KvCacheMode::Q6 => PARADEC_CACHE_MODE_Q6,
        KvCacheMode::Q4 => PARADEC_CACHE_MODE_Q4,
    }
}

/// Options of `mode` (its scales borrowed from `mode`, which must outlive them).
fn options(mode: &KvCacheMode) -> paradec_cache_options {
    let mut o = std::mem::MaybeUninit::<paradec_cache_options>::uninit();
    ok(paradec_cache_options_init(o.as_mut_ptr()));
    // SAFETY: paradec_cache_options_init wrote every field.
    let mut o = unsafe { o.assume_init() };
    o.mode = code_of(mode);
    if let KvCacheMode::Fp8E4M3 { k_scales, v_scales } = mode {
        o.k_scales = k_scales.as_ptr();
        o.n_k_scales = k_scales.len();
        o.v_scales = v_scales.as_ptr();
        o.n_v_scales = v_scales.len();
    }
    o
}

/// The modes that fit heads of `head_dim`, E4M3 with scales other than 1 for `layers` layers
/// of `kv_heads` heads.
fn modes(layers: usize, kv_heads: usize, head_dim: usize) -> Vec<KvCacheMode> {
    KvCacheMode::all()
        .into_iter()
        .filter(|m| {
            let (fk, fv) = m.formats();
            !(fk.has_run_scales() || fv.has_run_scales()) || head_dim.is_multiple_of(RUN)
        })
        .map(|m| match m {
            KvCacheMode::Fp8E4M3 { .. } => KvCacheMode::Fp8E4M3 {
                k_scales: (0..layers * kv_heads)
                    .map(|i| 0.5 + 0.25 * i as f32)
                    .collect(),
                v_scales: (0..layers * kv_heads)
                    .map(|i| 1.5 - 0.125 * i as f32)
                    .collect(),
            },
            m => m,
        })
        .collect()
}

fn describe(c: *const paradec_cache) -> paradec_cache_info {
    let mut info = paradec_cache_info {
        struct_size: std::mem::size_of::<paradec_cache_info>(),
        ..Default::default()
    };
    ok(paradec_cache_describe(c, &mut info));
    info
}

/// A call's parameters: C's struct over the step's past lengths and mask (kept alive by the
/// caller).
struct CParams {
    past: Vec<i64>,
    mask: Option<Vec<i64>>,
    batch: usize,
    q_len: usize,
}

impl CParams {
    fn of(step: &PagedStep) -> CParams {
        CParams {
            past: step.past.iter().map(|&p| p as i64).collect(),
            mask: step.mask01.clone(),
            batch: step.past.len(),
            q_len: step.q_len,
        }
    }
    fn new(past: &[i64], q_len: usize) -> CParams {
        CParams {
            past: past.to_vec(),
            mask: None,
            batch: past.len(),
            q_len,
        }
    }
    fn get(&self) -> paradec_attn_params {
        let (mask, slots) = match &self.mask {
            Some(m) => (m.as_ptr(), m.len() / self.batch),
            None => (ptr::null(), 0),
        };
        paradec_attn_params {
            struct_size: std::mem::size_of::<paradec_attn_params>(),
            batch: self.batch,
            q_len: self.q_len,
            past_len: self.past.as_ptr(),
            attention_mask: mask,
            mask_slots: slots,
            position_offset: ptr::null(),
        }
    }
}

/// A block table's tensors in host memory (page counts int64, or int32 with `narrow`).
struct CTable {
    ids: Buf,
    count: Buf,
    descs: [paradec_tensor; 2],
}

impl CTable {
    fn new(max_pages: usize, table: &[i32], count: &[i64], narrow: bool) -> Box<CTable> {
        let batch = count.len();
        let count = if narrow {
            Buf::i32(
                &[batch],
                &count.iter().map(|&c| c as i32).collect::<Vec<_>>(),
            )
        } else {
            Buf::i64(&[batch], count)
        };
        let mut t = Box::new(CTable {
            ids: Buf::i32(&[batch, max_pages], table),
            count,
            descs: [paradec_tensor {
                data: ptr::null_mut(),
                device: CPU,
                ndim: 0,
                dtype: dt(DType::I32),
                shape: ptr::null_mut(),
                strides: ptr::null_mut(),
                byte_offset: 0,
            }; 2],
        });
        t.descs = [t.ids.t(), t.count.t()];
        t
    }
    fn of(t: &PagedTable, narrow: bool) -> Box<CTable> {
        let count: Vec<i64> = t.page_count.iter().map(|&c| c as i64).collect();
        CTable::new(t.max_pages, &t.table, &count, narrow)
    }
    fn get(&self) -> paradec_block_table {
        paradec_block_table {
            page_ids: &self.descs[0],
            page_count: &self.descs[1],
        }
    }
}

struct CModel {
    m: *mut paradec_model,
    ws: *mut paradec_workspace,
    arch: ArchParams,
}

impl CModel {
    fn load(name: &str) -> CModel {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let cdir = CString::new(dir.to_str().unwrap()).unwrap();
        let mut m = ptr::null_mut();
        ok(paradec_model_load(cdir.as_ptr(), ptr::null(), &mut m));
        let mut ws = ptr::null_mut();
        ok(paradec_workspace_create(CPU, dt(DType::F32), &mut ws));
        CModel {
            m,
            ws,
            arch: ArchParams::from_dir(&dir).unwrap(),
        }
    }

    /// A forward of `ids` through `cache` (paged when `table` is given); the logits.
    fn forward(
        &self,
        ids: &[i64],
        p: &CParams,
        cache: *mut paradec_cache,
        table: Option<&CTable>,
    ) -> Result<Vec<f32>, (paradec_status, String)> {
        let mut idb = Buf::i64(&[p.batch, p.q_len], ids);
        let mut logits = Buf::f32(
            &[p.batch, p.q_len, self.arch.vocab],
            &vec![7.0; p.batch * p.q_len * self.arch.vocab],
        );
        let params = p.get();
        let st = match table {
            Some(t) => paradec_model_forward_paged(
                self.m,
                ptr::null_mut(),
                self.ws,
                &idb.t(),
                &params,
                cache,
                &t.get(),
                ptr::null(),
                0,
                &logits.t(),
            ),
            None => paradec_model_forward(
                self.m,
                ptr::null_mut(),
                self.ws,
                &idb.t(),
                &params,
                cache,
                ptr::null(),
                0,
                &logits.t(),
            ),
        };
        if st != PARADEC_OK {
            let msg = last_error();
            assert!(
                logits.f32s().iter().all(|&x| x == 7.0),
                "a failed forward wrote logits"
            );
            return Err((st, msg));
        }
        Ok(logits.f32s())
    }
}

impl Drop for CModel {
    fn drop(&mut self) {
        paradec_workspace_free(self.ws);
        paradec_model_free(self.m);
    }
}

/// Token ids of a step: a fixed pattern shifted by the step's index `i`.
fn step_ids(step: &PagedStep, vocab: usize, i: usize) -> Vec<i64> {
    (0..step.past.len() * step.q_len)
        .map(|t| ((t * 37 + i * 11 + 5) % vocab) as i64)
        .collect()
}

fn expect_err<T: std::fmt::Debug>(
    r: Result<T, (paradec_status, String)>,
    want: paradec_status,
    needle: &str,
) {
    match r {
        Ok(v) => panic!("expected {want:?} mentioning {needle:?}, got {v:?}"),
        Err((st, msg)) => {
            assert_eq!(st, want, "{msg}");
            assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
        }
    }
}

/// Fixture models from C, every mode each can store, both schedules, page sizes 1, 3 and 7,
/// pages handed out scrambled: the logits of `paradec_model_forward_paged` equal those of
/// `paradec_model_forward` over a contiguous cache in the same mode, to the bit; the paged
/// cache describes itself and its bytes are what `paradec_cache_bytes` and
/// `KvCache::bytes_needed_paged` predict.
#[test]
fn models_over_a_paged_cache_from_c_equal_the_contiguous_cache() {
    let mut cases = 0;
    for name in ["gpt_neox", "cohere2", "falcon_7b_mqa"] {
        let cm = CModel::load(name);
        let a = cm.arch.clone();
        for mode in modes(a.num_layers, a.kv_heads, a.head_dim) {
            let o = options(&mode);
            for (sname, schedule) in [
                ("staggered", staggered_schedule()),
                ("padded", padded_schedule()),
            ] {
                let mut flat = ptr::null_mut();
                ok(paradec_cache_create_with_options(
                    cm.m,
                    2,
                    schedule_len(&schedule) + 2,
                    dt(DType::F32),
                    CPU,
                    &o,
                    &mut flat,
                ));
                let want: Vec<Vec<f32>> = schedule
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let ids = step_ids(s, a.vocab, i);
                        cm.forward(&ids, &CParams::of(s), flat, None).unwrap()
                    })
                    .collect();
                paradec_cache_free(flat);
                for (k, page_size) in [1usize, 3, 7].into_iter().enumerate() {
                    let mut pager = Pager::for_schedule(&schedule, page_size, 40 + k as u64);
                    let mut pool = ptr::null_mut();
                    ok(paradec_cache_create_paged(
                        cm.m,
                        pager.num_pages,
                        page_size,
                        dt(DType::F32),
                        CPU,
                        &o,
                        &mut pool,
                    ));
                    let info = describe(pool);
                    let mut bytes = 0;
                    ok(paradec_cache_bytes(
                        a.num_layers,
                        pager.num_pages,
                        page_size,
                        a.kv_heads,
                        a.head_dim,
                        dt(DType::F32),
                        &o,
                        &mut bytes,
                    ));
                    assert_eq!(
                        (info.mode, info.num_layers, info.batch, info.capacity),
                        (code_of(&mode), a.num_layers, 0, pager.num_pages * page_size)
                    );
                    assert_eq!(
                        (info.page_size, info.num_pages, info.kv_heads, info.head_dim),
                        (page_size, pager.num_pages, a.kv_heads, a.head_dim)
                    );
                    assert_eq!((info.dtype, info.device), (dt(DType::F32), CPU));
                    let predicted = KvCache::bytes_needed_paged(
                        a.num_layers,
                        pager.num_pages,
                        page_size,
                        a.kv_heads,
                        a.head_dim,
                        DType::F32,
                        &mode,
                    );
                    assert_eq!((info.bytes, bytes), (predicted, predicted));
                    for (i, s) in schedule.iter().enumerate() {
                        let table = CTable::of(&pager.table_for(s), i % 2 == 1);
                        let ids = step_ids(s, a.vocab, i);
                        let got = cm
                            .forward(&ids, &CParams::of(s), pool, Some(&table))
                            .unwrap();
                        assert!(
                            bits(&got) == bits(&want[i]),
                            "{name} {} {sname} page {page_size}: call {i} differs",
                            mode.name()
                        );
                    }
                    paradec_cache_free(pool);
                    cases += 1;
                }
            }
        }
    }
    // gpt_neox (head_dim 32): six modes; cohere2 and falcon_7b_mqa (16): three each.
    assert_eq!(cases, (6 + 3 + 3) * 2 * 3);
}

/// A layer handle over its own paged cache (`paradec_cache_create_paged_for_layer`, layers
/// 0 ..= its index) and over its model's (`paradec_cache_create_paged`), through
/// `paradec_layer_forward_paged` and `paradec_layer_forward_interm_paged`: the outputs (and
/// the attention context) equal the contiguous cache's to the bit, in every mode.
#[test]
fn layers_over_a_paged_cache_from_c_equal_the_contiguous_cache() {
    for name in ["gpt_neox", "cohere2"] {
        let cm = CModel::load(name);
        let a = cm.arch.clone();
        let index = 1;
        let mut layer = ptr::null_mut();
        ok(paradec_model_layer(cm.m, index, &mut layer));
        let schedule = staggered_schedule();
        for mode in modes(index + 1, a.kv_heads, a.head_dim) {
            let o = options(&mode);
            let run = |cache: *mut paradec_cache, mut pager: Option<&mut Pager>| {
                let mut out = Vec::new();
                let mut seed = 3u32;
                for (i, s) in schedule.iter().enumerate() {
                    let p = CParams::of(s);
                    let n = p.batch * p.q_len * a.hidden;
                    let x: Vec<f32> = (0..n)
                        .map(|_| {
                            seed = seed.wrapping_mul(1103515245).wrapping_add(12345);
                            ((seed >> 9) & 0xffff) as f32 / 65536.0 - 0.5
                        })
                        .collect();
                    let mut h = Buf::f32(&[p.batch, p.q_len, a.hidden], &x);
                    let table = pager
                        .as_deref_mut()
                        .map(|pg| CTable::of(&pg.table_for(s), true));
                    let params = p.get();
                    let bt = table.as_ref().map(|t| t.get());
                    let mut im = ptr::null_mut();
                    let st = match (&bt, i % 2) {
                        (Some(t), 0) => paradec_layer_forward_paged(
                            layer,
                            ptr::null_mut(),
                            cm.ws,
                            &h.t(),
                            &params,
                            cache,
                            t,
                            ptr::null(),
                            0,
                        ),
                        (Some(t), _) => paradec_layer_forward_interm_paged(
                            layer,
                            ptr::null_mut(),
                            cm.ws,
                            &h.t(),
                            &params,
                            cache,
                            t,
                            ptr::null(),
                            0,
                            &mut im,
                        ),
                        (None, 0) => paradec_layer_forward(
                            layer,
                            ptr::null_mut(),
                            cm.ws,
                            &h.t(),
                            &params,
                            cache,
                            ptr::null(),
                            0,
                        ),
                        (None, _) => paradec_layer_forward_interm(
                            layer,
                            ptr::null_mut(),
                            cm.ws,
                            &h.t(),
                            &params,
                            cache,
                            ptr::null(),
                            0,
                            &mut im,
                        ),
                    };
                    ok(st);
                    let mut v = h.f32s();
                    if !im.is_null() {
                        let mut t = std::mem::MaybeUninit::<paradec_tensor>::uninit();
                        ok(paradec_interm_get(
                            im,
                            PARADEC_INTERM_ATTN_OUTPUT,
                            t.as_mut_ptr(),
                        ));
                        // SAFETY: written on success; the view points into `im` (f32,
                        // [tokens, heads · head_dim]) until it is freed below.
                        let ctx = unsafe {
                            let t = t.assume_init();
                            std::slice::from_raw_parts(
                                t.data as *const f32,
                                p.batch * p.q_len * a.heads * a.head_dim,
                            )
                            .to_vec()
                        };
                        v.extend(ctx);
                        paradec_interm_free(im);
                    }
                    out.push(v);
                }
                out
            };
            let mut flat = ptr::null_mut();
            ok(paradec_cache_create_for_layer_with_options(
                layer,
                2,
                schedule_len(&schedule) + 1,
                dt(DType::F32),
                CPU,
                &o,
                &mut flat,
            ));
            let want = run(flat, None);
            paradec_cache_free(flat);

            // The layer's own paged cache: pools of layers 0 ..= 1.
            let mut pager = Pager::for_schedule(&schedule, 4, 77);
            let mut own = ptr::null_mut();
            ok(paradec_cache_create_paged_for_layer(
                layer,
                pager.num_pages,
                4,
                dt(DType::F32),
                CPU,
                &o,
                &mut own,
            ));
            let info = describe(own);
            assert_eq!(
                (info.num_layers, info.batch, info.page_size, info.num_pages),
                (index + 1, 0, 4, pager.num_pages)
            );
            let got = run(own, Some(&mut pager));
            assert!(
                got.iter().zip(&want).all(|(g, w)| bits(g) == bits(w)),
                "{name} {}: the layer's paged cache differs",
                mode.name()
            );
            paradec_cache_free(own);

            // The model's paged cache, read by its layer (E4M3 scales of every layer).
            let mmode = match &mode {
                KvCacheMode::Fp8E4M3 { k_scales, v_scales } => {
                    let pad = |s: &Vec<f32>| {
                        let mut s = s.clone();
                        s.resize(a.num_layers * a.kv_heads, 2.0);
                        s
                    };
                    KvCacheMode::Fp8E4M3 {
                        k_scales: pad(k_scales),
                        v_scales: pad(v_scales),
                    }
                }
                m => m.clone(),
            };
            let mo = options(&mmode);
            let mut pager = Pager::for_schedule(&schedule, 3, 78);
            let mut shared = ptr::null_mut();
            ok(paradec_cache_create_paged(
                cm.m,
                pager.num_pages,
                3,
                dt(DType::F32),
                CPU,
                &mo,
                &mut shared,
            ));
            let got = run(shared, Some(&mut pager));
            assert!(
                got.iter().zip(&want).all(|(g, w)| bits(g) == bits(w)),
                "{name} {}: the model's paged cache read by its layer differs",
                mode.name()
            );
            paradec_cache_free(shared);
        }
        paradec_layer_free(layer);
    }
}

/// What a serving engine does with prefix caching: a prompt written once (batch 1) into pages
/// that two sequences then share read-only (batch 2) gives the decode step of a contiguous
/// cache holding the prompt twice.
#[test]
fn shared_prefix_pages_from_c() {
    let cm = CModel::load("gpt_neox");
    let prompt: Vec<i64> = vec![5, 17, 42, 9, 11, 3, 77, 1];
    for mode in modes(2, cm.arch.kv_heads, cm.arch.head_dim) {
        let o = options(&mode);
        let mut flat = ptr::null_mut();
        ok(paradec_cache_create_with_options(
            cm.m,
            2,
            12,
            dt(DType::F32),
            CPU,
            &o,
            &mut flat,
        ));
        let both: Vec<i64> = prompt.iter().chain(&prompt).copied().collect();
        cm.forward(&both, &CParams::new(&[0, 0], 8), flat, None)
            .unwrap();
        let step = CParams::new(&[8, 8], 1);
        let want = cm.forward(&[60, 61], &step, flat, None).unwrap();
        paradec_cache_free(flat);

        let mut pool = ptr::null_mut();
        ok(paradec_cache_create_paged(
            cm.m,
            8,
            4,
            dt(DType::F32),
            CPU,
            &o,
            &mut pool,
        ));
        let t = CTable::new(3, &[5, 2, -1], &[2], false);
        cm.forward(&prompt, &CParams::new(&[0], 8), pool, Some(&t))
            .unwrap();
        let t = CTable::new(3, &[5, 2, 7, 5, 2, 0], &[3, 3], false);
        let got = cm.forward(&[60, 61], &step, pool, Some(&t)).unwrap();
        assert_eq!(bits(&got), bits(&want), "{}", mode.name());
        paradec_cache_free(pool);
    }
}

/// The workspace plan of a paged forward: `Workspace::bytes_needed_paged` for the model and
/// the forward's hidden states and logits (as `paradec_model_memory` counts them); its errors.
#[test]
fn workspace_bytes_of_a_paged_forward() {
    let cm = CModel::load("cohere");
    let a = &cm.arch;
    let mut bytes = 7usize;
    ok(paradec_workspace_bytes_paged(
        cm.m,
        64,
        25,
        4,
        dt(DType::F16),
        &mut bytes,
    ));
    let arena = Workspace::bytes_needed_paged(a, 64, 25, 4, DType::F16).unwrap();
    assert_eq!(bytes, arena + 64 * (a.vocab + 2 * a.hidden) * 2);
    let contiguous = Workspace::bytes_needed(a, 64, 100, DType::F16).unwrap();
    assert!(arena > contiguous, "{arena} <= {contiguous}");

    let mut b = 7usize;
    let f16 = dt(DType::F16);
    fails(
        paradec_workspace_bytes_paged(ptr::null(), 64, 25, 4, f16, &mut b),
        PARADEC_ERR_NULL_ARGUMENT,
        "`model`",
    );
    fails(
        paradec_workspace_bytes_paged(cm.m, 64, 25, 4, f16, ptr::null_mut()),
        PARADEC_ERR_NULL_ARGUMENT,
        "`out_bytes`",
    );
    fails(
        paradec_workspace_bytes_paged(cm.m, 64, 0, 4, f16, &mut b),
        PARADEC_ERR_INVALID_ARGUMENT,
        "max_pages (0)",
    );
    fails(
        paradec_workspace_bytes_paged(cm.m, 0, 25, 4, f16, &mut b),
        PARADEC_ERR_INVALID_ARGUMENT,
        "tokens (0)",
    );
    fails(
        paradec_workspace_bytes_paged(cm.m, 64, 25, 0, f16, &mut b),
        PARADEC_ERR_INVALID_ARGUMENT,
        "page_size (0)",
    );
    fails(
        paradec_workspace_bytes_paged(cm.m, 64, usize::MAX, 4, f16, &mut b),
        PARADEC_ERR_INVALID_ARGUMENT,
        "overflows",
    );
    fails(
        paradec_workspace_bytes_paged(cm.m, 64, 25, 4, dt(DType::I32), &mut b),
        PARADEC_ERR_DTYPE,
        "dtype: expected f32, f16 or bf16, got i32",
    );
    assert_eq!(b, 7, "failed queries leave *out_bytes untouched");
}

/// Paged caches that cannot be made: each error named, `*out` untouched.
#[test]
fn paged_cache_creation_errors_are_named() {
    let cm = CModel::load("cohere2"); // head_dim 16, 3 layers, 2 KV heads
    let f32t = dt(DType::F32);
    let sentinel = 0x5a5a as *mut paradec_cache;
    let mut c = sentinel;
    let native = options(&KvCacheMode::Native);
    fails(
        paradec_cache_create_paged(ptr::null(), 4, 4, f32t, CPU, &native, &mut c),
        PARADEC_ERR_NULL_ARGUMENT,
        "`model`",
    );
    fails(
        paradec_cache_create_paged(cm.m, 4, 4, f32t, CPU, &native, ptr::null_mut()),
        PARADEC_ERR_NULL_ARGUMENT,
        "`out`",
    );
    fails(
        paradec_cache_create_paged(cm.m, 0, 4, f32t, CPU, &native, &mut c),
        PARADEC_ERR_INVALID_ARGUMENT,
        "0 pages of 4 positions",
    );
    fails(
        paradec_cache_create_paged(cm.m, 4, 0, f32t, CPU, &native, &mut c),
        PARADEC_ERR_INVALID_ARGUMENT,
        "4 pages of 0 positions",
    );
    fails(
        paradec_cache_create_paged(cm.m, 1 << 31, 4, f32t, CPU, &native, &mut c),
        PARADEC_ERR_INVALID_ARGUMENT,
        "block table entries are int32",
    );
    fails(
        paradec_cache_create_paged(cm.m, 4, 4, dt(DType::F16), CPU, &native, &mut c),
        PARADEC_ERR_UNSUPPORTED,
        "native pages on the CPU hold f32 values",
    );
    fails(
        paradec_cache_create_paged(cm.m, 4, 4, dt(DType::I64), CPU, &native, &mut c),
        PARADEC_ERR_DTYPE,
        "cache dtype",
    );
    fails(
        paradec_cache_create_paged(cm.m, 4, 4, f32t, CPU, &options(&KvCacheMode::Q8), &mut c),
        PARADEC_ERR_UNSUPPORTED,
        "head_dim 16 is not a multiple of 32",
    );
    let mut o = options(&KvCacheMode::Native);
    o.mode = 6;
    fails(
        paradec_cache_create_paged(cm.m, 4, 4, f32t, CPU, &o, &mut c),
        PARADEC_ERR_INVALID_ARGUMENT,
        "options.mode: 6",
    );
    o.mode = PARADEC_CACHE_MODE_NATIVE;
    o.struct_size = 8;
    fails(
        paradec_cache_create_paged(cm.m, 4, 4, f32t, CPU, &o, &mut c),
        PARADEC_ERR_STRUCT_SIZE,
        "paradec_cache_options.struct_size is 8",
    );
    let e4m3_mode = KvCacheMode::Fp8E4M3 {
        k_scales: vec![1.0f32; 3 * 2],
        v_scales: Vec::new(),
    };
    let e4m3 = options(&e4m3_mode);
    // The layer's cache holds layers 0 ..= 1: 2 × 2 scales, not 3 × 2.
    let mut layer = ptr::null_mut();
    ok(paradec_model_layer(cm.m, 1, &mut layer));
    fails(
        paradec_cache_create_paged_for_layer(layer, 4, 4, f32t, CPU, &e4m3, &mut c),
        PARADEC_ERR_INVALID_ARGUMENT,
        "options.n_k_scales: 6 scales, expected 2 layers × 2 KV heads = 4",
    );
    fails(
        paradec_cache_create_paged_for_layer(ptr::null(), 4, 4, f32t, CPU, &e4m3, &mut c),
        PARADEC_ERR_NULL_ARGUMENT,
        "`layer`",
    );
    fails(
        paradec_cache_create_paged_for_layer(layer, 4, 0, f32t, CPU, ptr::null(), &mut c),
        PARADEC_ERR_INVALID_ARGUMENT,
        "4 pages of 0 positions",
    );
    assert_eq!(c, sentinel, "failed creates leave *out untouched");
    // The model's cache takes the 3 × 2 scales; NULL options are the native mode.
    ok(paradec_cache_create_paged(
        cm.m, 4, 4, f32t, CPU, &e4m3, &mut c,
    ));
    assert_eq!(describe(c).mode, PARADEC_CACHE_MODE_FP8_E4M3);
    paradec_cache_free(c);
    ok(paradec_cache_create_paged_for_layer(
        layer,
        4,
        4,
        f32t,
        CPU,
        ptr::null(),
        &mut c,
    ));
    let info = describe(c);
    assert_eq!(
        (info.mode, info.num_layers, info.bytes),
        (PARADEC_CACHE_MODE_NATIVE, 2, 2 * 2 * 4 * 4 * 2 * 16 * 4)
    );

    // A caller of a header before the paged fields gets the fields up to `bytes`.
    let v1 = std::mem::offset_of!(paradec_cache_info, page_size);
    let mut old = paradec_cache_info {
        struct_size: v1,
        page_size: 12345,
        num_pages: 12345,
        ..Default::default()
    };
    ok(paradec_cache_describe(c, &mut old));
    assert_eq!(
        (old.struct_size, old.bytes, old.page_size, old.num_pages),
        (v1, info.bytes, 12345, 12345)
    );
    let mut small = paradec_cache_info {
        struct_size: v1 - 8,
        ..Default::default()
    };
    fails(
        paradec_cache_describe(c, &mut small),
        PARADEC_ERR_STRUCT_SIZE,
        &format!("paradec_cache_info.struct_size is {}", v1 - 8),
    );
    paradec_cache_free(c);
    paradec_layer_free(layer);
}

/// Every way a forward and a paged cache (or a block table and a contiguous cache) can
/// disagree, through the model and both layer forms: the status, a message naming it, and
/// nothing written — the logits and the hidden state untouched, and a decode step after all
/// of them gives what it gives over a pool no refused call touched (every refused call would
/// have rewritten positions that step reads).
#[test]
fn paged_forward_errors_are_named_and_write_nothing() {
    let cm = CModel::load("gpt_neox");
    let a = cm.arch.clone();
    let f32t = dt(DType::F32);
    let q8 = options(&KvCacheMode::Q8);
    let make_pool = || {
        let mut pool = ptr::null_mut();
        ok(paradec_cache_create_paged(
            cm.m, 6, 4, f32t, CPU, &q8, &mut pool,
        ));
        pool
    };
    let (pool, witness) = (make_pool(), make_pool());
    let mut flat = ptr::null_mut();
    ok(paradec_cache_create_with_options(
        cm.m, 2, 16, f32t, CPU, &q8, &mut flat,
    ));
    // A prefill of 3 tokens per sequence: sequence 0 in page 4, sequence 1 in page 1.
    let prefill_ids = [1i64, 2, 3, 4, 5, 6];
    let t0 = CTable::new(3, &[4, -1, -1, 1, -1, -1], &[1, 1], false);
    for c in [pool, witness] {
        cm.forward(&prefill_ids, &CParams::new(&[0, 0], 3), c, Some(&t0))
            .unwrap();
    }
    // Each refused call rewrites positions 0 and 1 (other ids) where it would write at all.
    let rewrite = CParams::new(&[0, 0], 2);
    let ids = [9i64, 8, 7, 6];
    let table = |t: &[i32], c: &[i64]| CTable::new(3, t, c, false);
    let mut layer = ptr::null_mut();
    ok(paradec_model_layer(cm.m, 1, &mut layer));
    let hidden0 = vec![0.25f32; 4 * a.hidden];

    // The model, the layer and the layer's interm form refuse the same call the same way,
    // and write nothing (logits, hidden, *out).
    let all = |p: &CParams,
               cache: *mut paradec_cache,
               t: Option<&CTable>,
               want: paradec_status,
               needle: &str| {
        let bt = t.map(|t| t.get());
        let btp = bt.as_ref().map_or(ptr::null(), |b| b as *const _);
        expect_err(cm.forward(&ids, p, cache, t), want, needle);
        let mut h = Buf::f32(&[p.batch, p.q_len, a.hidden], &hidden0);
        let params = p.get();
        let st = match t {
            Some(_) => paradec_layer_forward_paged(
                layer,
                ptr::null_mut(),
                cm.ws,
                &h.t(),
                &params,
                cache,
                btp,
                ptr::null(),
                0,
            ),
            None => paradec_layer_forward(
                layer,
                ptr::null_mut(),
                cm.ws,
                &h.t(),
                &params,
                cache,
                ptr::null(),
                0,
            ),
        };
        fails(st, want, needle);
        assert_eq!(h.f32s(), hidden0, "a refused layer forward wrote hidden");
        let sentinel = 0x77 as *mut paradec_interm;
        let mut im = sentinel;
        let st = match t {
            Some(_) => paradec_layer_forward_interm_paged(
                layer,
                ptr::null_mut(),
                cm.ws,
                &h.t(),
                &params,
                cache,
                btp,
                ptr::null(),
                0,
                &mut im,
            ),
            None => paradec_layer_forward_interm(
                layer,
                ptr::null_mut(),
                cm.ws,
                &h.t(),
                &params,
                cache,
                ptr::null(),
                0,
                &mut im,
            ),
        };
        fails(st, want, needle);
        assert_eq!(im, sentinel, "a refused interm forward wrote *out");
        assert_eq!(h.f32s(), hidden0);
    };

    // A paged cache given to the plain forwards: no block table.
    all(
        &rewrite,
        pool,
        None,
        PARADEC_ERR_INVALID_ARGUMENT,
        "cache: a paged cache",
    );
    expect_err(
        cm.forward(&ids, &rewrite, pool, None),
        PARADEC_ERR_INVALID_ARGUMENT,
        "use paradec_model_forward_paged",
    );
    // A block table given with a contiguous cache.
    let good = table(&[4, -1, -1, 1, -1, -1], &[1, 1]);
    all(
        &rewrite,
        flat,
        Some(&good),
        PARADEC_ERR_INVALID_ARGUMENT,
        "block_table: given, but the cache is contiguous",
    );
    // The paged forwards without a cache, or without a table.
    all(
        &rewrite,
        ptr::null_mut(),
        Some(&good),
        PARADEC_ERR_NULL_ARGUMENT,
        "`cache`",
    );
    let mut idb = Buf::i64(&[2, 2], &ids);
    let mut lg = Buf::f32(&[2, 2, a.vocab], &vec![0.0; 4 * a.vocab]);
    fails(
        paradec_model_forward_paged(
            cm.m,
            ptr::null_mut(),
            cm.ws,
            &idb.t(),
            &rewrite.get(),
            pool,
            ptr::null(),
            ptr::null(),
            0,
            &lg.t(),
        ),
        PARADEC_ERR_NULL_ARGUMENT,
        "`block_table`",
    );
    let mut h = Buf::f32(&[2, 2, a.hidden], &hidden0);
    fails(
        paradec_layer_forward_paged(
            layer,
            ptr::null_mut(),
            cm.ws,
            &h.t(),
            &rewrite.get(),
            pool,
            ptr::null(),
            ptr::null(),
            0,
        ),
        PARADEC_ERR_NULL_ARGUMENT,
        "`block_table`",
    );
    let mut no_ids = good.get();
    no_ids.page_ids = ptr::null();
    fails(
        paradec_model_forward_paged(
            cm.m,
            ptr::null_mut(),
            cm.ws,
            &idb.t(),
            &rewrite.get(),
            pool,
            &no_ids,
            ptr::null(),
            0,
            &lg.t(),
        ),
        PARADEC_ERR_NULL_ARGUMENT,
        "block_table.page_ids",
    );

    // The table's tensors: dtype, shape, memory.
    let mut wide_ids = table(&[4, -1, -1, 1, -1, -1], &[1, 1]);
    wide_ids.ids = Buf::i64(&[2, 3], &[4, -1, -1, 1, -1, -1]);
    wide_ids.descs[0] = wide_ids.ids.t();
    all(
        &rewrite,
        pool,
        Some(&wide_ids),
        PARADEC_ERR_DTYPE,
        "block_table.page_ids",
    );
    let mut float_count = table(&[4, -1, -1, 1, -1, -1], &[1, 1]);
    float_count.count = Buf::f32(&[2], &[1.0, 1.0]);
    float_count.descs[1] = float_count.count.t();
    all(
        &rewrite,
        pool,
        Some(&float_count),
        PARADEC_ERR_DTYPE,
        "block_table.page_count: expected int32 or int64",
    );
    let three = CTable::new(3, &[4, -1, -1, 1, -1, -1, 2, -1, -1], &[1, 1, 1], false);
    all(
        &rewrite,
        pool,
        Some(&three),
        PARADEC_ERR_SHAPE,
        "block_table.page_ids: expected [2, max_pages]",
    );
    let mut short_count = table(&[4, -1, -1, 1, -1, -1], &[1, 1]);
    short_count.count = Buf::i64(&[1], &[1]);
    short_count.descs[1] = short_count.count.t();
    all(
        &rewrite,
        pool,
        Some(&short_count),
        PARADEC_ERR_SHAPE,
        "block_table.page_count",
    );
    let mut on_device = table(&[4, -1, -1, 1, -1, -1], &[1, 1]);
    on_device.descs[0].device = paradec_device {
        device_type: PARADEC_DEVICE_CUDA,
        device_id: 0,
    };
    all(
        &rewrite,
        pool,
        Some(&on_device),
        PARADEC_ERR_DEVICE,
        "block_table.page_ids",
    );
    let none = CTable::new(0, &[], &[0, 0], false);
    all(
        &rewrite,
        pool,
        Some(&none),
        PARADEC_ERR_INVALID_ARGUMENT,
        "pages per sequence 0 must be positive",
    );

    // The table's values against the pool and the call.
    all(
        &rewrite,
        pool,
        Some(&table(&[4, -1, -1, 1, -1, -1], &[1, -1])),
        PARADEC_ERR_INVALID_ARGUMENT,
        "block_table.page_count[1] = -1 is negative",
    );
    all(
        &rewrite,
        pool,
        Some(&table(&[4, 0, 2, 1, -1, -1], &[4, 1])),
        PARADEC_ERR_INVALID_ARGUMENT,
        "sequence 0 owns 4 pages, more than the table's 3 per sequence",
    );
    all(
        &rewrite,
        pool,
        Some(&table(&[4, -1, -1, 9, -1, -1], &[1, 1])),
        PARADEC_ERR_INVALID_ARGUMENT,
        "sequence 1's page 0 is 9, outside the pool of 6 pages",
    );
    all(
        &rewrite,
        pool,
        Some(&table(&[-2, -1, -1, 1, -1, -1], &[1, 1])),
        PARADEC_ERR_INVALID_ARGUMENT,
        "sequence 0's page 0 is -2, outside the pool of 6 pages",
    );
    // Sequence 1 owns one page of 4 positions; 3 + 2 reach 5.
    all(
        &CParams::new(&[0, 3], 2),
        pool,
        Some(&table(&[4, -1, -1, 1, -1, -1], &[1, 1])),
        PARADEC_ERR_CAPACITY,
        "sequence 1 reaches position 5 (past 3 + 2 new) but owns 1 pages of 4 positions",
    );
    // Both sequences in page 4: rows 16 and 17 written twice.
    all(
        &rewrite,
        pool,
        Some(&table(&[4, -1, -1, 4, -1, -1], &[1, 1])),
        PARADEC_ERR_INVALID_ARGUMENT,
        "sequences 0 and 1 would both write pool row 16",
    );
    // The plain graph capture refuses a paged cache, with or without CUDA, naming the
    // _paged capture.
    let mut g = ptr::null_mut();
    fails(
        paradec_model_capture_decode(cm.m, ptr::null_mut(), pool, 2, 1, false, &mut g),
        PARADEC_ERR_UNSUPPORTED,
        "paradec_model_capture_decode_paged",
    );
    assert!(g.is_null());

    // Nothing was written: a decode step reads positions 0 ..= 2 of both sequences, the same
    // over the pool and over its witness.
    let step = CParams::new(&[3, 3], 1);
    let got = cm.forward(&[11, 12], &step, pool, Some(&t0)).unwrap();
    let want = cm.forward(&[11, 12], &step, witness, Some(&t0)).unwrap();
    assert_eq!(
        bits(&got),
        bits(&want),
        "a refused call wrote into the pool"
    );

    paradec_layer_free(layer);
    paradec_cache_free(pool);
    paradec_cache_free(witness);
    paradec_cache_free(flat);
}

/// The paged graph calls on a machine without a CUDA device (and, without the `cuda`
/// feature, a library without CUDA): every argument is checked, in order, each refusal named
/// and `*out` untouched — NULL pointers, a contiguous cache, a table width of 0 or wider than
/// the pools, the step's own bounds — and only then does the capture need the device:
/// `PARADEC_ERR_NO_DEVICE` without CUDA, `PARADEC_ERR_DEVICE` (the model is on the host) with
/// it, as the plain capture answers. The step checks its graph, ids, parameters, block table
/// (its tensors as `paradec_model_forward_paged` checks them) and logits the same way.
#[test]
fn paged_graph_calls_check_their_arguments_before_the_device() {
    let cm = CModel::load("gpt_neox");
    let f32t = dt(DType::F32);
    let (mut pool, mut flat) = (ptr::null_mut(), ptr::null_mut());
    ok(paradec_cache_create_paged(
        cm.m,
        6,
        4,
        f32t,
        CPU,
        ptr::null(),
        &mut pool,
    ));
    ok(paradec_cache_create(cm.m, 2, 16, f32t, CPU, &mut flat));
    let (no_graph, why) = if cfg!(feature = "cuda") {
        (PARADEC_ERR_DEVICE, "CUDA device")
    } else {
        (PARADEC_ERR_NO_DEVICE, "without the `cuda` feature")
    };

    let sentinel = 0x77 as *mut paradec_model_graph;
    let mut g = sentinel;
    let cap = |cache, batch, q_len, max_pages, out| {
        paradec_model_capture_decode_paged(
            cm.m,
            ptr::null_mut(),
            cache,
            batch,
            q_len,
            false,
            max_pages,
            out,
        )
    };
    fails(
        paradec_model_capture_decode_paged(
            ptr::null(),
            ptr::null_mut(),
            pool,
            2,
            1,
            false,
            3,
            &mut g,
        ),
        PARADEC_ERR_NULL_ARGUMENT,
        "`model`",
    );
    fails(
        cap(pool, 2, 1, 3, ptr::null_mut()),
        PARADEC_ERR_NULL_ARGUMENT,
        "`out`",
    );
    // (cache, batch, q_len, max_pages): the refusal, in the documented order. 3 sequences × 16
    // tokens take 12 pages of 4; 9 tokens do not fit 2 pages of 4. Last, every argument right:
    // the device is the one thing missing.
    let refused: [(
        *mut paradec_cache,
        usize,
        usize,
        usize,
        paradec_status,
        &str,
    ); 10] = [
        (
            ptr::null_mut(),
            2,
            1,
            3,
            PARADEC_ERR_NULL_ARGUMENT,
            "`cache`",
        ),
        (
            flat,
            2,
            1,
            3,
            PARADEC_ERR_INVALID_ARGUMENT,
            "cache: a contiguous cache: capture it with paradec_model_capture_decode (",
        ),
        (
            pool,
            2,
            1,
            0,
            PARADEC_ERR_INVALID_ARGUMENT,
            "max_pages: 0 pages per sequence",
        ),
        (
            pool,
            2,
            1,
            7,
            PARADEC_ERR_INVALID_ARGUMENT,
            "max_pages: 7 pages per sequence; a block table over this cache holds 1 ..= 6",
        ),
        (pool, 0, 1, 3, PARADEC_ERR_INVALID_ARGUMENT, "batch 0"),
        (pool, 1, 17, 6, PARADEC_ERR_INVALID_ARGUMENT, "at most 16"),
        (
            pool,
            3,
            16,
            6,
            PARADEC_ERR_CAPACITY,
            "need 12 pages of 4 positions, the pool has 6",
        ),
        (
            pool,
            1,
            9,
            2,
            PARADEC_ERR_CAPACITY,
            "exceed the cache capacity 8",
        ),
        (pool, 2, 1, 3, no_graph, why),
        (pool, 1, 16, 4, no_graph, why),
    ];
    for (cache, batch, q_len, max_pages, code, what) in refused {
        fails(cap(cache, batch, q_len, max_pages, &mut g), code, what);
    }
    assert_eq!(g, sentinel, "a refused capture wrote *out");
    // The plain capture still takes the contiguous cache (and meets the same wall).
    fails(
        paradec_model_capture_decode(cm.m, ptr::null_mut(), flat, 2, 1, false, &mut g),
        no_graph,
        why,
    );
    assert_eq!(g, sentinel);

    // The step: NULL arguments first.
    let vocab = cm.arch.vocab;
    let mut ids = Buf::i64(&[2, 1], &[1, 2]);
    let mut logits = Buf::f32(&[2, 1, vocab], &vec![7.0; 2 * vocab]);
    // Bound, not a temporary: `params` points into its past lengths.
    let past = CParams::new(&[3, 3], 1);
    let params = past.get();
    let table = CTable::new(3, &[4, -1, -1, 1, -1, -1], &[1, 1], false);
    let bt = table.get();
    fails(
        paradec_model_graph_step_paged(
            ptr::null_mut(),
            ptr::null_mut(),
            &ids.t(),
            &params,
            &bt,
            &logits.t(),
        ),
        PARADEC_ERR_NULL_ARGUMENT,
        "`graph`",
    );
    paradec_model_graph_free(ptr::null_mut());

    // Without CUDA no graph can be captured: an empty handle (all a graph is in such a build)
    // stands in for one, so that the step's own checks run up to the device.
    #[cfg(not(feature = "cuda"))]
    {
        let g = Box::into_raw(Box::new(paradec_model_graph {}));
        let step = |ids: *const paradec_tensor,
                    params: *const paradec_attn_params,
                    bt: *const paradec_block_table,
                    logits: *const paradec_tensor| {
            paradec_model_graph_step_paged(g, ptr::null_mut(), ids, params, bt, logits)
        };
        let (it, lt) = (ids.t(), logits.t());
        fails(
            step(ptr::null(), &params, &bt, &lt),
            PARADEC_ERR_NULL_ARGUMENT,
            "`ids`",
        );
        fails(
            step(&it, ptr::null(), &bt, &lt),
            PARADEC_ERR_NULL_ARGUMENT,
            "`paradec_attn_params`",
        );
        fails(
            step(&it, &params, ptr::null(), &lt),
            PARADEC_ERR_NULL_ARGUMENT,
            "`block_table`",
        );
        let no_ids = paradec_block_table {
            page_ids: ptr::null(),
            page_count: bt.page_count,
        };
        fails(
            step(&it, &params, &no_ids, &lt),
            PARADEC_ERR_NULL_ARGUMENT,
            "block_table.page_ids",
        );
        // A table for one sequence, and page ids of int64, given a batch of two.
        let one = CTable::new(3, &[4, -1, -1], &[1], false);
        fails(
            step(&it, &params, &one.get(), &lt),
            PARADEC_ERR_SHAPE,
            "block_table.page_ids: expected [2, max_pages]",
        );
        let mut wide_ids = Buf::i64(&[2, 3], &[4, -1, -1, 1, -1, -1]);
        let wt = wide_ids.t();
        let wrong = paradec_block_table {
            page_ids: &wt,
            page_count: bt.page_count,
        };
        fails(
            step(&it, &params, &wrong, &lt),
            PARADEC_ERR_DTYPE,
            "block_table.page_ids",
        );
        let neg = CTable::new(3, &[4, -1, -1, 1, -1, -1], &[1, -1], false);
        fails(
            step(&it, &params, &neg.get(), &lt),
            PARADEC_ERR_INVALID_ARGUMENT,
            "block_table.page_count[1] = -1 is negative",
        );
        fails(
            step(&it, &params, &bt, ptr::null()),
            PARADEC_ERR_NULL_ARGUMENT,
            "`logits`",
        );
        fails(step(&it, &params, &bt, &lt), no_graph, why);
        // The plain step checks its arguments and meets the same wall.
        fails(
            paradec_model_graph_step(g, ptr::null_mut(), &it, &params, ptr::null()),
            PARADEC_ERR_NULL_ARGUMENT,
            "`logits`",
        );
        fails(
            paradec_model_graph_step(g, ptr::null_mut(), &it, &params, &lt),
            no_graph,
            why,
        );
        paradec_model_graph_free(g);
    }
    assert!(
        logits.f32s().iter().all(|&x| x == 7.0),
        "a refused step wrote logits"
    );

    // The refusals left both caches usable.
    let prefill = CParams::new(&[0, 0], 3);
    cm.forward(&[1, 2, 3, 4, 5, 6], &prefill, pool, Some(&table))
        .unwrap();
    cm.forward(&[1, 2, 3, 4, 5, 6], &prefill, flat, None)
        .unwrap();
    paradec_cache_free(pool);
    paradec_cache_free(flat);
}

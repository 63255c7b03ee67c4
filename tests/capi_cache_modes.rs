//! The C ABI of the KV cache modes and of the paged cache, from Rust on the CPU:
//! - caches made through `paradec_cache_create_with_options` (model) and
//!   `paradec_cache_create_for_layer_with_options` (layer) in every mode compute what the Rust
//!   `KvCache::with_mode` computes, to the bit, and describe themselves;
//! - the kernel-level calls over caller-owned pages (`paradec_op_rotary_cache_write_quant`,
//!   `paradec_op_attention_quant`, `paradec_op_paged_rotary_cache_write`,
//!   `paradec_op_paged_attention`, plain and `_ws`) write the same codes and give the same
//!   outputs as the ops (`ops::kv_quant`) in every mode, and a paged pool gives the contiguous
//!   cache's output;
//! - every error path returns its status, names the culprit and writes nothing.

use std::ffi::{c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr;

use paradec::capi::*;
use paradec::kv_quant::{BlockTable, QuantLayer, QuantPages};
use paradec::ops;
use paradec::vocab::{AttnMasking, AttnShape, CacheSlots, RopeStyle, RotaryArgs};
use paradec::{AttnParams, DType, Device, KvCache, KvCacheMode, Model, Stream, Tensor, Workspace};

use paradec_status::*;

const CPU: paradec_device = paradec_device {
    device_type: PARADEC_DEVICE_CPU,
    device_id: 0,
};
const GPU: paradec_device = paradec_device {
    device_type: PARADEC_DEVICE_CUDA,
    device_id: 0,
};

fn dt(d: DType) -> paradec_dtype {
    let (code, bits) = match d {
        DType::F32 => (PARADEC_DTYPE_FLOAT, 32),
        DType::F16 => (PARADEC_DTYPE_FLOAT, 16),
        DType::BF16 => (PARADEC_DTYPE_BFLOAT, 16),
        DType::I32 => (PARADEC_DTYPE_INT, 32),
        DType::I64 => (PARADEC_DTYPE_INT, 64),
        DType::U8 => (PARADEC_DTYPE_UINT, 8),
        other => panic!("{other}"),
    };
    paradec_dtype {
        code,
        bits,
        lanes: 1,
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
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

/// 16 bytes, 16-byte aligned (as device allocations are).
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct A16([u8; 16]);

/// Host memory with a descriptor: 16-byte aligned storage of `dtype` elements.
struct Buf {
    words: Vec<A16>,
    bytes: usize,
    shape: Vec<i64>,
    dtype: DType,
    device: paradec_device,
}

impl Buf {
    fn zeros(dtype: DType, shape: &[usize]) -> Buf {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        Buf {
            words: vec![A16([0; 16]); bytes.div_ceil(16).max(1)],
            bytes,
            shape: shape.iter().map(|&d| d as i64).collect(),
            dtype,
            device: CPU,
        }
    }
    fn from_bytes(dtype: DType, shape: &[usize], data: &[u8]) -> Buf {
        let mut b = Buf::zeros(dtype, shape);
        assert_eq!(data.len(), b.bytes);
        b.bytes_mut().copy_from_slice(data);
        b
    }
    fn f32(shape: &[usize], v: &[f32]) -> Buf {
        Buf::from_bytes(
            DType::F32,
            shape,
            &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
        )
    }
    fn i64(shape: &[usize], v: &[i64]) -> Buf {
        Buf::from_bytes(
            DType::I64,
            shape,
            &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
        )
    }
    fn i32(shape: &[usize], v: &[i32]) -> Buf {
        Buf::from_bytes(
            DType::I32,
            shape,
            &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
        )
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: the words hold at least `bytes` initialized bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast(), self.bytes) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast(), self.bytes) }
    }
    fn f32s(&self) -> Vec<f32> {
        self.bytes()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    fn on_gpu(mut self) -> Buf {
        self.device = GPU;
        self
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

/// Caller-owned pages of one layer in `mode`: [a, b, kv_heads, …] (see `paradec_cache_pages`),
/// E4M3 head scales `ks` / `vs`.
struct Pages {
    mode: i32,
    bufs: [Option<Buf>; 6],
    descs: [paradec_tensor; 6],
}

fn null_tensor() -> paradec_tensor {
    paradec_tensor {
        data: ptr::null_mut(),
        device: CPU,
        ndim: 0,
        dtype: dt(DType::F32),
        shape: ptr::null_mut(),
        strides: ptr::null_mut(),
        byte_offset: 0,
    }
}

impl Pages {
    fn new(mode: &KvCacheMode, [a, b, h, d]: [usize; 4], ks: &[f32], vs: &[f32]) -> Pages {
        let (fk, fv) = mode.formats();
        let side = |f: paradec::kv_quant::KvFormat, hs: &[f32]| -> [Option<Buf>; 3] {
            use paradec::kv_quant::KvFormat as F;
            let data = if f == F::Native {
                Buf::zeros(DType::F32, &[a, b, h, d])
            } else {
                Buf::zeros(DType::U8, &[a, b, h, f.row_bytes(d)])
            };
            let scales = f
                .has_run_scales()
                .then(|| Buf::zeros(DType::F16, &[a, b, h, d / 32]));
            let heads = (f == F::E4M3).then(|| Buf::f32(&[h], hs));
            [Some(data), scales, heads]
        };
        let [k, kscales, khead] = side(fk, ks);
        let [v, vscales, vhead] = side(fv, vs);
        let mut p = Pages {
            mode: code_of(mode),
            bufs: [k, kscales, khead, v, vscales, vhead],
            descs: [null_tensor(); 6],
        };
        for (d, b) in p.descs.iter_mut().zip(p.bufs.iter_mut()) {
            if let Some(b) = b {
                *d = b.t();
            }
        }
        p
    }
    fn arg(&self) -> paradec_cache_pages {
        let at = |i: usize| -> *const paradec_tensor {
            if self.bufs[i].is_some() {
                &self.descs[i]
            } else {
                ptr::null()
            }
        };
        paradec_cache_pages {
            mode: self.mode,
            k: at(0),
            k_scales: at(1),
            k_head_scales: at(2),
            v: at(3),
            v_scales: at(4),
            v_head_scales: at(5),
        }
    }
    /// The bytes of the written tensors (values or codes, run scales) of K and V.
    fn written(&self) -> Vec<Vec<u8>> {
        [0, 1, 3, 4]
            .iter()
            .filter_map(|&i| self.bufs[i].as_ref().map(|b| b.bytes().to_vec()))
            .collect()
    }
}

/// The same bytes from a Rust layer of pages.
fn layer_bytes(l: &QuantLayer) -> Vec<Vec<u8>> {
    let side = |p: &QuantPages| {
        let mut v = vec![p.codes.host().unwrap().to_le_bytes()];
        if let Some(s) = &p.scales {
            v.push(s.host().unwrap().to_le_bytes());
        }
        v
    };
    let mut k = side(&l.k);
    let v = side(&l.v);
    // Pages::written lists K codes, K scales, V codes, V scales.
    k.extend(v);
    k
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

/// The modes, E4M3 with non-unit scales for `layers` layers of `kv_heads` heads.
fn modes(layers: usize, kv_heads: usize) -> Vec<KvCacheMode> {
    KvCacheMode::all()
        .into_iter()
        .map(|m| match m {
            KvCacheMode::Fp8E4M3 { .. } => KvCacheMode::Fp8E4M3 {
                k_scales: (0..layers * kv_heads)
                    .map(|i| 0.25 + 0.5 * i as f32)
                    .collect(),
                v_scales: (0..layers * kv_heads)
                    .map(|i| 2.0 - 0.25 * i as f32)
                    .collect(),
            },
            m => m,
        })
        .collect()
}

/// xorshift: values in [-1, 1).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
}

// ---- caches in a mode, model and layer level ----------------------------------------------

fn options(mode: &KvCacheMode) -> paradec_cache_options {
    let mut o = std::mem::MaybeUninit::<paradec_cache_options>::uninit();
    ok(paradec_cache_options_init(o.as_mut_ptr()));
    // SAFETY: paradec_cache_options_init wrote every field.
    let mut o = unsafe { o.assume_init() };
    assert_eq!(o.mode, PARADEC_CACHE_MODE_NATIVE);
    o.mode = code_of(mode);
    if let KvCacheMode::Fp8E4M3 { k_scales, v_scales } = mode {
        o.k_scales = k_scales.as_ptr();
        o.n_k_scales = k_scales.len();
        o.v_scales = v_scales.as_ptr();
        o.n_v_scales = v_scales.len();
    }
    o
}

fn describe(c: *const paradec_cache) -> paradec_cache_info {
    let mut info = paradec_cache_info {
        struct_size: std::mem::size_of::<paradec_cache_info>(),
        ..Default::default()
    };
    ok(paradec_cache_describe(c, &mut info));
    info
}

fn attn_params(batch: usize, q_len: usize, past: &[i64]) -> paradec_attn_params {
    paradec_attn_params {
        struct_size: std::mem::size_of::<paradec_attn_params>(),
        batch,
        q_len,
        past_len: past.as_ptr(),
        attention_mask: ptr::null(),
        mask_slots: 0,
        position_offset: ptr::null(),
    }
}

#[test]
fn caches_in_each_mode_compute_what_the_rust_caches_compute() {
    for name in ["gpt_neox", "gptj"] {
        let dir = fixture(name);
        let cdir = CString::new(dir.to_str().unwrap()).unwrap();
        let mut cm = ptr::null_mut();
        ok(paradec_model_load(cdir.as_ptr(), ptr::null(), &mut cm));
        let rm = Model::load(&dir).unwrap();
        let a = rm.arch.clone();
        let (batch, capacity, vocab) = (2, 12, a.vocab);
        let mut cws = ptr::null_mut();
        ok(paradec_workspace_create(CPU, dt(DType::F32), &mut cws));
        let mut rws = Workspace::cpu();
        for mode in modes(a.num_layers, a.kv_heads) {
            let o = options(&mode);
            let mut cache = ptr::null_mut();
            let st = paradec_cache_create_with_options(
                cm,
                batch,
                capacity,
                dt(DType::F32),
                CPU,
                &o,
                &mut cache,
            );
            let mut bytes = 0usize;
            let bst = paradec_cache_bytes(
                a.num_layers,
                batch,
                capacity,
                a.kv_heads,
                a.head_dim,
                dt(DType::F32),
                &o,
                &mut bytes,
            );
            let quant_runs = matches!(mode, KvCacheMode::Q8 | KvCacheMode::Q6 | KvCacheMode::Q4);
            if quant_runs && !a.head_dim.is_multiple_of(32) {
                // head_dim 16: a Hadamard run would cross heads.
                fails(st, PARADEC_ERR_UNSUPPORTED, "head_dim 16");
                fails(bst, PARADEC_ERR_UNSUPPORTED, "head_dim 16");
                assert!(cache.is_null());
                continue;
            }
            ok(st);
            ok(bst);
            let mut rc = KvCache::with_mode(
                a.num_layers,
                batch,
                capacity,
                a.kv_heads,
                a.head_dim,
                DType::F32,
                Device::Cpu,
                mode.clone(),
            )
            .unwrap();
            let info = describe(cache);
            assert_eq!(info.mode, code_of(&mode));
            assert_eq!(
                (
                    info.num_layers,
                    info.batch,
                    info.capacity,
                    info.kv_heads,
                    info.head_dim
                ),
                (a.num_layers, batch, capacity, a.kv_heads, a.head_dim)
            );
            assert_eq!((info.dtype, info.device), (dt(DType::F32), CPU));
            assert_eq!(info.bytes, rc.bytes(), "{name} {}", mode.name());
            assert_eq!(bytes, rc.bytes(), "{name} {}", mode.name());
            // A prefill of 4 tokens, then a step of 1 per sequence (the second one rewound).
            for (q_len, past) in [(4usize, [0i64, 0]), (1, [4, 2])] {
                let ids: Vec<i64> = (0..batch * q_len)
                    .map(|i| ((i * 7 + 3) % vocab) as i64)
                    .collect();
                let mut idb = Buf::i64(&[batch, q_len], &ids);
                let mut logits = Buf::zeros(DType::F32, &[batch, q_len, vocab]);
                let p = attn_params(batch, q_len, &past);
                ok(paradec_model_forward(
                    cm,
                    ptr::null_mut(),
                    cws,
                    &idb.t(),
                    &p,
                    cache,
                    ptr::null(),
                    0,
                    &logits.t(),
                ));
                let rp =
                    AttnParams::with_past(batch, q_len, past.iter().map(|&x| x as usize).collect());
                let ids32: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
                let want = rm
                    .forward(&Stream::Host, &ids32, &rp, Some(&mut rc), &mut rws)
                    .unwrap();
                assert_eq!(
                    logits.f32s(),
                    want.as_f32().unwrap(),
                    "{name} {}: C cache differs from the Rust cache",
                    mode.name()
                );
            }
            paradec_cache_free(cache);

            // A layer's cache: layers 0 ..= 1, the layer forward through it.
            let mut layer = ptr::null_mut();
            ok(paradec_model_layer(cm, 1, &mut layer));
            let lmode = match &mode {
                KvCacheMode::Fp8E4M3 { k_scales, v_scales } => KvCacheMode::Fp8E4M3 {
                    k_scales: k_scales[..2 * a.kv_heads].to_vec(),
                    v_scales: v_scales[..2 * a.kv_heads].to_vec(),
                },
                m => m.clone(),
            };
            let lo = options(&lmode);
            let mut lc = ptr::null_mut();
            ok(paradec_cache_create_for_layer_with_options(
                layer,
                1,
                8,
                dt(DType::F32),
                CPU,
                &lo,
                &mut lc,
            ));
            assert_eq!(describe(lc).num_layers, 2);
            let mut rlc = KvCache::with_mode(
                2,
                1,
                8,
                a.kv_heads,
                a.head_dim,
                DType::F32,
                Device::Cpu,
                lmode.clone(),
            )
            .unwrap();
            let mut rng = Rng(0x5eed ^ a.hidden as u64);
            for (q_len, past) in [(3usize, 0i64), (1, 3)] {
                let x = rng.vec(q_len * a.hidden, 1.0);
                let mut h = Buf::f32(&[1, q_len, a.hidden], &x);
                let pasts = [past];
                let p = attn_params(1, q_len, &pasts);
                ok(paradec_layer_forward(
                    layer,
                    ptr::null_mut(),
                    cws,
                    &h.t(),
                    &p,
                    lc,
                    ptr::null(),
                    0,
                ));
                let mut rx = Tensor::from_f32(x, &[q_len, a.hidden]).unwrap();
                let rp = AttnParams::with_past(1, q_len, vec![past as usize]);
                rm.layers()[1]
                    .forward(&Stream::Host, &mut rx, Some(&mut rlc), &rp, &[], &mut rws)
                    .unwrap();
                assert_eq!(
                    h.f32s(),
                    rx.as_f32().unwrap(),
                    "{name} {} layer",
                    lmode.name()
                );
            }
            paradec_cache_free(lc);
            paradec_layer_free(layer);
        }
        paradec_workspace_free(cws);
        paradec_model_free(cm);
    }
}

#[test]
fn cache_creation_errors_are_named() {
    let dir = fixture("gpt_neox");
    let cdir = CString::new(dir.to_str().unwrap()).unwrap();
    let mut m = ptr::null_mut();
    ok(paradec_model_load(cdir.as_ptr(), ptr::null(), &mut m));
    let (layers, kvh) = (2, 3);
    let sentinel = 0x5a5a as *mut paradec_cache;
    let mut c = sentinel;
    let f32t = dt(DType::F32);
    let create = |o: &paradec_cache_options, c: &mut *mut paradec_cache| {
        paradec_cache_create_with_options(m, 1, 4, f32t, CPU, o, c)
    };

    let mut o = options(&KvCacheMode::Native);
    o.mode = 9;
    fails(
        create(&o, &mut c),
        PARADEC_ERR_INVALID_ARGUMENT,
        "options.mode: 9",
    );
    o.mode = -1;
    fails(
        create(&o, &mut c),
        PARADEC_ERR_INVALID_ARGUMENT,
        "options.mode: -1",
    );

    let k = vec![1.0f32; layers * kvh + 1];
    let mut o = options(&KvCacheMode::Fp8E4M3 {
        k_scales: k.clone(),
        v_scales: Vec::new(),
    });
    fails(
        create(&o, &mut c),
        PARADEC_ERR_INVALID_ARGUMENT,
        "options.n_k_scales: 7 scales, expected 2 layers × 3 KV heads = 6",
    );
    let mut bad = vec![1.0f32; layers * kvh];
    bad[4] = -2.0;
    o.k_scales = bad.as_ptr();
    o.n_k_scales = bad.len();
    fails(
        create(&o, &mut c),
        PARADEC_ERR_INVALID_ARGUMENT,
        "k_scales[4] = -2 is not a positive finite scale",
    );
    bad[4] = f32::NAN;
    fails(
        create(&o, &mut c),
        PARADEC_ERR_INVALID_ARGUMENT,
        "k_scales[4] = NaN",
    );
    o.k_scales = ptr::null();
    o.n_k_scales = 6;
    fails(
        create(&o, &mut c),
        PARADEC_ERR_NULL_ARGUMENT,
        "options.k_scales",
    );

    let mut o = options(&KvCacheMode::Q8);
    let vs = [1.0f32; 6];
    o.v_scales = vs.as_ptr();
    o.n_v_scales = 6;
    fails(
        create(&o, &mut c),
        PARADEC_ERR_INVALID_ARGUMENT,
        "only the FP8 E4M3 mode takes scales, not mode q8",
    );

    let o = options(&KvCacheMode::Fp8E5M2);
    fails(
        paradec_cache_create_with_options(m, 1, 4, dt(DType::BF16), CPU, &o, &mut c),
        PARADEC_ERR_UNSUPPORTED,
        "fp8e5m2",
    );
    let mut o = options(&KvCacheMode::Q4);
    o.struct_size = 8;
    fails(
        create(&o, &mut c),
        PARADEC_ERR_STRUCT_SIZE,
        "paradec_cache_options.struct_size is 8",
    );
    let o = options(&KvCacheMode::Q4);
    fails(
        paradec_cache_create_with_options(ptr::null(), 1, 4, f32t, CPU, &o, &mut c),
        PARADEC_ERR_NULL_ARGUMENT,
        "`model`",
    );
    fails(
        paradec_cache_create_with_options(m, 1, 4, f32t, CPU, &o, ptr::null_mut()),
        PARADEC_ERR_NULL_ARGUMENT,
        "`out`",
    );
    fails(
        paradec_cache_create_with_options(m, 0, 4, f32t, CPU, &o, &mut c),
        PARADEC_ERR_INVALID_ARGUMENT,
        "must all be positive",
    );
    fails(
        paradec_cache_create_with_options(m, 1, 4, dt(DType::I32), CPU, &o, &mut c),
        PARADEC_ERR_DTYPE,
        "cache dtype",
    );
    fails(
        paradec_cache_options_init(ptr::null_mut()),
        PARADEC_ERR_NULL_ARGUMENT,
        "`options`",
    );
    assert_eq!(c, sentinel, "failed creates leave *out untouched");

    // The layer form counts the scales of layers 0 ..= index.
    let mut layer = ptr::null_mut();
    ok(paradec_model_layer(m, 0, &mut layer));
    let scales = vec![1.0f32; layers * kvh];
    let o = options(&KvCacheMode::Fp8E4M3 {
        k_scales: scales.clone(),
        v_scales: scales,
    });
    fails(
        paradec_cache_create_for_layer_with_options(layer, 1, 4, f32t, CPU, &o, &mut c),
        PARADEC_ERR_INVALID_ARGUMENT,
        "expected 1 layers × 3 KV heads = 3",
    );
    fails(
        paradec_cache_create_for_layer_with_options(ptr::null(), 1, 4, f32t, CPU, &o, &mut c),
        PARADEC_ERR_NULL_ARGUMENT,
        "`layer`",
    );
    // NULL options: the native mode.
    ok(paradec_cache_create_for_layer_with_options(
        layer,
        1,
        4,
        f32t,
        CPU,
        ptr::null(),
        &mut c,
    ));
    assert_eq!(describe(c).mode, PARADEC_CACHE_MODE_NATIVE);
    assert_eq!(describe(c).bytes, 2 * 4 * kvh * 32 * 4);

    // Describe and the size query.
    let mut info = paradec_cache_info {
        struct_size: 4,
        ..Default::default()
    };
    fails(
        paradec_cache_describe(c, &mut info),
        PARADEC_ERR_STRUCT_SIZE,
        "paradec_cache_info.struct_size is 4",
    );
    info.struct_size = std::mem::size_of::<paradec_cache_info>();
    fails(
        paradec_cache_describe(ptr::null(), &mut info),
        PARADEC_ERR_NULL_ARGUMENT,
        "`cache`",
    );
    let mut bytes = 7usize;
    let q8 = options(&KvCacheMode::Q8);
    fails(
        paradec_cache_bytes(2, 1, 4, 3, 16, f32t, &q8, &mut bytes),
        PARADEC_ERR_UNSUPPORTED,
        "head_dim 16 is not a multiple of 32",
    );
    fails(
        paradec_cache_bytes(2, 1, 4, 3, 32, dt(DType::U8), &q8, &mut bytes),
        PARADEC_ERR_DTYPE,
        "dtype: expected f32, f16 or bf16",
    );
    fails(
        paradec_cache_bytes(2, 1, 4, 3, 32, f32t, &q8, ptr::null_mut()),
        PARADEC_ERR_NULL_ARGUMENT,
        "`out_bytes`",
    );
    assert_eq!(bytes, 7, "failed queries leave *out_bytes untouched");
    // Q8: one byte per value and one f16 scale per 32 values, K and V.
    ok(paradec_cache_bytes(2, 1, 4, 3, 32, f32t, &q8, &mut bytes));
    assert_eq!(bytes, 2 * 2 * 4 * (3 * 32 + 2 * 3));
    ok(paradec_cache_bytes(
        2,
        1,
        4,
        3,
        32,
        f32t,
        ptr::null(),
        &mut bytes,
    ));
    assert_eq!(bytes, 2 * 2 * 4 * 3 * 32 * 4);
    paradec_cache_free(c);
    paradec_layer_free(layer);
    paradec_model_free(m);
}

// ---- kernel level ---------------------------------------------------------------------------

/// One case: sizes and the history every sequence has.
struct Case {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    capacity: usize,
    page_size: usize,
}

/// The calls' common inputs: q, k, v of a step and its positions.
struct Step {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    past: Vec<i64>,
    q_len: usize,
}

impl Step {
    fn new(rng: &mut Rng, c: &Case, past: &[i64], q_len: usize) -> Step {
        let t = c.batch * q_len;
        Step {
            q: rng.vec(t * c.heads * c.d, 1.0),
            k: rng.vec(t * c.kv_heads * c.d, 2.0),
            v: rng.vec(t * c.kv_heads * c.d, 3.0),
            past: past.to_vec(),
            q_len,
        }
    }
    fn positions(&self) -> Vec<i64> {
        self.past
            .iter()
            .flat_map(|&p| (0..self.q_len as i64).map(move |t| p + t))
            .collect()
    }
    fn past_usize(&self) -> Vec<usize> {
        self.past.iter().map(|&p| p as usize).collect()
    }
}

fn inv_freq(rot_dim: usize) -> Vec<f32> {
    (0..rot_dim / 2)
        .map(|j| 10000f32.powf(-(2.0 * j as f32) / rot_dim as f32))
        .collect()
}

/// The C calls' buffers of one step.
struct CStep {
    q: Buf,
    k: Buf,
    v: Buf,
    pos: Buf,
    past: Buf,
}

impl CStep {
    fn new(s: &Step, c: &Case) -> CStep {
        let (b, l) = (c.batch, s.q_len);
        CStep {
            q: Buf::f32(&[b, l, c.heads, c.d], &s.q),
            k: Buf::f32(&[b, l, c.kv_heads, c.d], &s.k),
            v: Buf::f32(&[b, l, c.kv_heads, c.d], &s.v),
            pos: Buf::i64(&[b * l], &s.positions()),
            past: Buf::i64(&[b], &s.past),
        }
    }
}

/// A block table over a pool of `num_pages`: each sequence owns `count[b]` pages, handed out
/// in a shuffled order.
fn shuffled_table(count: &[usize], max_pages: usize, num_pages: usize) -> Vec<i32> {
    let mut order: Vec<i32> = (0..num_pages as i32).rev().collect();
    order.rotate_left(3);
    let mut table = vec![-1i32; count.len() * max_pages];
    let mut next = 0;
    for (b, &n) in count.iter().enumerate() {
        for i in 0..n {
            table[b * max_pages + i] = order[next];
            next += 1;
        }
    }
    table
}

/// Writes two steps (a prefill of 6, then 2 tokens at past [5, 2, 4]: rewinds) and attends the
/// second, through the C calls and through the ops, contiguous and paged, in `mode`; every
/// write's codes and every output must be equal, and the paged output the contiguous one.
fn kernel_calls_equal_the_ops(mode: &KvCacheMode, c: &Case, rng: &mut Rng) {
    let name = mode.name();
    let (hs_k, hs_v) = mode.head_scales(0, c.kv_heads);
    let rot_dim = c.d / 2;
    let inv = inv_freq(rot_dim);
    let rot_args = RotaryArgs {
        style: RopeStyle::Half,
        rot_dim,
        inv_freq: &inv,
        attn_factor: 1.0,
    };
    let mut invb = Buf::f32(&[rot_dim / 2], &inv);
    let inv_t = invb.t();
    let crot = paradec_rotary {
        style: PARADEC_ROPE_STYLE_HALF,
        rot_dim,
        inv_freq: &inv_t,
        attn_factor: 1.0,
    };
    let steps = [
        Step::new(rng, c, &vec![0; c.batch], 6),
        Step::new(rng, c, &[5, 2, 4][..c.batch], 2),
    ];
    let s = Stream::Host;
    let mut ws = Workspace::cpu();
    let mut cws = ptr::null_mut();
    ok(paradec_workspace_create(CPU, dt(DType::F32), &mut cws));

    // Pages: contiguous [batch, capacity], and a pool whose sequences own enough pages for
    // both steps (one more than needed for sequence 0).
    let count: Vec<usize> = (0..c.batch)
        .map(|b| {
            let end = steps
                .iter()
                .map(|s| s.past[b] as usize + s.q_len)
                .max()
                .unwrap();
            end.div_ceil(c.page_size) + usize::from(b == 0)
        })
        .collect();
    let max_pages = *count.iter().max().unwrap();
    let num_pages = count.iter().sum::<usize>() + 2;
    let table = shuffled_table(&count, max_pages, num_pages);
    let bt = BlockTable {
        page_size: c.page_size,
        max_pages,
        table: &table,
        page_count: &count,
    };
    let mut ids = Buf::i32(&[c.batch, max_pages], &table);
    let mut counts = Buf::i64(
        &[c.batch],
        &count.iter().map(|&n| n as i64).collect::<Vec<_>>(),
    );
    let (ids_t, counts_t) = (ids.t(), counts.t());
    let cbt = paradec_block_table {
        page_ids: &ids_t,
        page_count: &counts_t,
    };

    let kvh = c.kv_heads;
    let mut r_flat = QuantLayer::new(
        mode,
        0,
        1,
        c.batch,
        c.capacity,
        kvh,
        c.d,
        DType::F32,
        Device::Cpu,
    )
    .unwrap();
    let mut r_pool = QuantLayer::new(
        mode,
        0,
        1,
        num_pages,
        c.page_size,
        kvh,
        c.d,
        DType::F32,
        Device::Cpu,
    )
    .unwrap();
    let c_flat = Pages::new(mode, [c.batch, c.capacity, kvh, c.d], &hs_k, &hs_v);
    let c_pool = Pages::new(mode, [num_pages, c.page_size, kvh, c.d], &hs_k, &hs_v);
    let (flat_arg, pool_arg) = (c_flat.arg(), c_pool.arg());

    let mut rotated_q = Vec::new();
    for (i, st) in steps.iter().enumerate() {
        let past = st.past_usize();
        let pos = st.positions();
        let t = |x: &[f32], w: usize| Tensor::from_f32(x.to_vec(), &[x.len() / w, w]).unwrap();
        let slots = CacheSlots {
            batch: c.batch,
            q_len: st.q_len,
            capacity: c.capacity,
            past_len: &past,
        };
        // The ops: contiguous, then paged.
        let (mut rq, mut rk, rv) = (t(&st.q, c.d), t(&st.k, c.d), t(&st.v, c.d));
        ops::rotary_and_cache_write_quant(
            &s,
            &mut ws,
            &mut rq,
            &mut rk,
            &rv,
            c.heads,
            kvh,
            c.d,
            &pos,
            Some(&rot_args),
            &slots,
            &mut r_flat,
        )
        .unwrap();
        let (mut pq, mut pk) = (t(&st.q, c.d), t(&st.k, c.d));
        ops::paged_rotary_and_cache_write(
            &s,
            &mut ws,
            &mut pq,
            &mut pk,
            &rv,
            c.heads,
            kvh,
            c.d,
            &pos,
            Some(&rot_args),
            &past,
            st.q_len,
            &bt,
            &mut r_pool,
        )
        .unwrap();
        // The C calls: plain for the first step, _ws (host: the workspace is optional) for the
        // second.
        let mut a = CStep::new(st, c);
        let mut b = CStep::new(st, c);
        let (at, bt_) = (
            [a.q.t(), a.k.t(), a.v.t(), a.pos.t(), a.past.t()],
            [b.q.t(), b.k.t(), b.v.t(), b.pos.t(), b.past.t()],
        );
        if i == 0 {
            ok(paradec_op_rotary_cache_write_quant(
                ptr::null_mut(),
                &at[0],
                &at[1],
                &at[2],
                &at[3],
                &crot,
                &at[4],
                &flat_arg,
            ));
            ok(paradec_op_paged_rotary_cache_write(
                ptr::null_mut(),
                &bt_[0],
                &bt_[1],
                &bt_[2],
                &bt_[3],
                &crot,
                &bt_[4],
                &cbt,
                &pool_arg,
            ));
        } else {
            ok(paradec_op_rotary_cache_write_quant_ws(
                ptr::null_mut(),
                ptr::null_mut(),
                &at[0],
                &at[1],
                &at[2],
                &at[3],
                &crot,
                &at[4],
                &flat_arg,
            ));
            ok(paradec_op_paged_rotary_cache_write_ws(
                ptr::null_mut(),
                cws,
                &bt_[0],
                &bt_[1],
                &bt_[2],
                &bt_[3],
                &crot,
                &bt_[4],
                &cbt,
                &pool_arg,
            ));
        }
        assert_eq!(a.q.f32s(), rq.as_f32().unwrap(), "{name}: rotated q");
        rotated_q = a.q.f32s();
        assert_eq!(a.k.f32s(), rk.as_f32().unwrap(), "{name}: rotated k");
        assert_eq!(b.q.f32s(), pq.as_f32().unwrap(), "{name}: paged rotated q");
        assert_eq!(
            c_flat.written(),
            layer_bytes(&r_flat),
            "{name}: contiguous pages after step {i}"
        );
        assert_eq!(
            c_pool.written(),
            layer_bytes(&r_pool),
            "{name}: pool after step {i}"
        );
        assert!(
            c_pool.written()[0].iter().any(|&b| b != 0),
            "{name}: the pool was written"
        );
    }

    // Attention of the second step's (rotated) queries, plain and masked with a window.
    let st = &steps[1];
    let past = st.past_usize();
    let qv = rotated_q;
    let stride = c.capacity;
    let mask: Vec<f32> = (0..c.batch * stride)
        .map(|i| {
            if i % stride == 1 {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let shape = AttnShape {
        batch: c.batch,
        q_len: st.q_len,
        heads: c.heads,
        kv_heads: kvh,
        head_dim: c.d,
        capacity: c.capacity,
    };
    let scale = 1.0 / (c.d as f32).sqrt();
    for (masked, window) in [(false, 0usize), (true, 3)] {
        let masking = AttnMasking {
            past_len: &past,
            window,
            mask: masked.then_some(&mask[..]),
            mask_stride: if masked { stride } else { 0 },
        };
        let rq = Tensor::from_f32(qv.clone(), &[c.batch * st.q_len, c.heads * c.d]).unwrap();
        let n = qv.len();
        let mut o1 = Tensor::from_f32(vec![0.0; n], &[n]).unwrap();
        let mut o2 = Tensor::from_f32(vec![0.0; n], &[n]).unwrap();
        ops::attention_quant(&s, &mut ws, &rq, &r_flat, &shape, &masking, scale, &mut o1).unwrap();
        ops::paged_attention(
            &s, &mut ws, &rq, &r_pool, &bt, &shape, &masking, scale, &mut o2,
        )
        .unwrap();
        assert_eq!(o1.as_f32().unwrap(), o2.as_f32().unwrap(), "{name}: ops");
        assert!(o1.as_f32().unwrap().iter().any(|&x| x != 0.0));
        let qshape = [c.batch, st.q_len, c.heads, c.d];
        let mut cq = Buf::f32(&qshape, &qv);
        let mut past_b = Buf::i64(&[c.batch], &st.past);
        let mut mask_b = Buf::f32(&[c.batch, stride], &mask);
        let (q_t, past_t, mask_t) = (cq.t(), past_b.t(), mask_b.t());
        let mask_p: *const paradec_tensor = if masked { &mask_t } else { ptr::null() };
        let outs: Vec<Vec<f32>> = (0..4)
            .map(|which| {
                let mut out = Buf::zeros(DType::F32, &qshape);
                let out_t = out.t();
                ok(match which {
                    0 => paradec_op_attention_quant(
                        ptr::null_mut(),
                        &q_t,
                        &flat_arg,
                        &past_t,
                        mask_p,
                        window,
                        scale,
                        &out_t,
                    ),
                    1 => paradec_op_attention_quant_ws(
                        ptr::null_mut(),
                        cws,
                        &q_t,
                        &flat_arg,
                        &past_t,
                        mask_p,
                        window,
                        scale,
                        &out_t,
                    ),
                    2 => paradec_op_paged_attention(
                        ptr::null_mut(),
                        &q_t,
                        &pool_arg,
                        &cbt,
                        &past_t,
                        mask_p,
                        window,
                        scale,
                        &out_t,
                    ),
                    _ => paradec_op_paged_attention_ws(
                        ptr::null_mut(),
                        ptr::null_mut(),
                        &q_t,
                        &pool_arg,
                        &cbt,
                        &past_t,
                        mask_p,
                        window,
                        scale,
                        &out_t,
                    ),
                });
                out.f32s()
            })
            .collect();
        for (i, o) in outs.iter().enumerate() {
            assert_eq!(
                &o[..],
                o1.as_f32().unwrap(),
                "{name}: attention call {i} (mask {masked})"
            );
        }
    }
    paradec_workspace_free(cws);
}

#[test]
fn kernel_calls_equal_the_ops_in_every_mode() {
    let mut rng = Rng(0x1234_5678_9abc);
    let cases = [
        Case {
            batch: 3,
            heads: 4,
            kv_heads: 2,
            d: 32,
            capacity: 10,
            page_size: 4,
        },
        Case {
            batch: 2,
            heads: 2,
            kv_heads: 1,
            d: 64,
            capacity: 9,
            page_size: 1,
        },
    ];
    for c in &cases {
        for mode in modes(1, c.kv_heads) {
            kernel_calls_equal_the_ops(&mode, c, &mut rng);
        }
    }
    // The FP8 modes and the native one for a head_dim that is not a multiple of 32.
    let c = Case {
        batch: 2,
        heads: 2,
        kv_heads: 2,
        d: 16,
        capacity: 8,
        page_size: 3,
    };
    for mode in modes(1, 2).into_iter().take(3) {
        kernel_calls_equal_the_ops(&mode, &c, &mut rng);
    }
}

/// A contiguous Q8 layer and a Q8 pool of 4 pages of 8 (1 KV head of 32 features) for the
/// error paths, with a step of q_len 1 over 1 sequence.
struct ErrSetup {
    q: Buf,
    k: Buf,
    v: Buf,
    past: Buf,
    flat: Pages,
    pool: Pages,
    ids: Buf,
    count: Buf,
    out: Buf,
}

impl ErrSetup {
    fn new(mode: &KvCacheMode) -> ErrSetup {
        let q = Buf::f32(&[1, 1, 1, 32], &[0.5; 32]);
        ErrSetup {
            k: Buf::f32(&[1, 1, 1, 32], &[0.25; 32]),
            v: Buf::f32(&[1, 1, 1, 32], &[0.75; 32]),
            q,
            past: Buf::i64(&[1], &[0]),
            flat: Pages::new(mode, [1, 4, 1, 32], &[1.0], &[1.0]),
            pool: Pages::new(mode, [4, 8, 1, 32], &[1.0], &[1.0]),
            ids: Buf::i32(&[1, 2], &[0, 1]),
            count: Buf::i64(&[1], &[2]),
            out: Buf::zeros(DType::F32, &[1, 1, 1, 32]),
        }
    }
}

#[test]
fn kernel_errors_are_named_and_write_nothing() {
    let mut e = ErrSetup::new(&KvCacheMode::Q8);
    let (q, k, v, past, out) = (e.q.t(), e.k.t(), e.v.t(), e.past.t(), e.out.t());
    let (ids, count) = (e.ids.t(), e.count.t());
    let table = paradec_block_table {
        page_ids: &ids,
        page_count: &count,
    };
    let flat = e.flat.arg();
    let pool = e.pool.arg();
    let nul = ptr::null_mut();
    let write = |pages: &paradec_cache_pages, past: &paradec_tensor| {
        paradec_op_rotary_cache_write_quant(nul, &q, &k, &v, ptr::null(), ptr::null(), past, pages)
    };
    let pwrite =
        |table: *const paradec_block_table, pages: &paradec_cache_pages, past: &paradec_tensor| {
            paradec_op_paged_rotary_cache_write(
                nul,
                &q,
                &k,
                &v,
                ptr::null(),
                ptr::null(),
                past,
                table,
                pages,
            )
        };
    let attend = |pages: &paradec_cache_pages, past: &paradec_tensor, out: &paradec_tensor| {
        paradec_op_attention_quant(nul, &q, pages, past, ptr::null(), 0, 1.0, out)
    };
    let pattend = |table: *const paradec_block_table,
                   pages: &paradec_cache_pages,
                   past: &paradec_tensor,
                   mask: *const paradec_tensor| {
        paradec_op_paged_attention(nul, &q, pages, table, past, mask, 0, 1.0, &out)
    };
    let before = (e.flat.written(), e.pool.written(), e.q.f32s(), e.k.f32s());

    // NULL arguments.
    fails(
        paradec_op_rotary_cache_write_quant(
            nul,
            &q,
            &k,
            &v,
            ptr::null(),
            ptr::null(),
            &past,
            ptr::null(),
        ),
        PARADEC_ERR_NULL_ARGUMENT,
        "`pages`",
    );
    fails(
        pwrite(ptr::null(), &pool, &past),
        PARADEC_ERR_NULL_ARGUMENT,
        "`block_table`",
    );
    let mut no_scales = flat;
    no_scales.k_scales = ptr::null();
    fails(
        write(&no_scales, &past),
        PARADEC_ERR_NULL_ARGUMENT,
        "`pages.k_scales`",
    );
    let mut no_v = flat;
    no_v.v = ptr::null();
    fails(
        attend(&no_v, &past, &out),
        PARADEC_ERR_NULL_ARGUMENT,
        "`pages.v`",
    );
    let no_ids = paradec_block_table {
        page_ids: ptr::null(),
        page_count: &count,
    };
    fails(
        pattend(&no_ids, &pool, &past, ptr::null()),
        PARADEC_ERR_NULL_ARGUMENT,
        "`block_table.page_ids`",
    );

    // Bad mode codes; tensors a mode does not take or needs.
    let mut bad_mode = flat;
    bad_mode.mode = 6;
    fails(
        write(&bad_mode, &past),
        PARADEC_ERR_INVALID_ARGUMENT,
        "pages.mode: 6 is not a cache mode",
    );
    let e5 = ErrSetup::new(&KvCacheMode::Fp8E5M2);
    let mut e5_flat = e5.flat.arg();
    e5_flat.k_scales = flat.k_scales;
    fails(
        write(&e5_flat, &past),
        PARADEC_ERR_INVALID_ARGUMENT,
        "pages.k_scales: given, but mode fp8e5m2's k format has no run scales",
    );
    let e5_flat = e5.flat.arg();
    let mut as_e4 = e5_flat;
    as_e4.mode = PARADEC_CACHE_MODE_FP8_E4M3;
    fails(
        write(&as_e4, &past),
        PARADEC_ERR_NULL_ARGUMENT,
        "`pages.k_head_scales`",
    );
    let e4 = ErrSetup::new(&KvCacheMode::Fp8E4M3 {
        k_scales: vec![],
        v_scales: vec![],
    });
    let mut e4_flat = e4.flat.arg();
    let mut as_e5 = e4_flat;
    as_e5.mode = PARADEC_CACHE_MODE_FP8_E5M2;
    fails(
        write(&as_e5, &past),
        PARADEC_ERR_INVALID_ARGUMENT,
        "pages.k_head_scales: given, but mode fp8e5m2's k format has no head scales",
    );
    let mut wide = Buf::f32(&[2], &[1.0, 1.0]);
    let wide_t = wide.t();
    e4_flat.v_head_scales = &wide_t;
    fails(
        write(&e4_flat, &past),
        PARADEC_ERR_SHAPE,
        "pages.v_head_scales: expected shape [1], got [2]",
    );
    // Q6 reads Q8 for K and Q4 for V: Q8 V codes are the wrong size.
    let mut as_q6 = flat;
    as_q6.mode = PARADEC_CACHE_MODE_Q6;
    fails(
        write(&as_q6, &past),
        PARADEC_ERR_SHAPE,
        "pages.v: expected shape [1, 4, 1, 16], got [1, 4, 1, 32]",
    );
    // Native pages hold q's dtype.
    let mut as_native = flat;
    as_native.mode = PARADEC_CACHE_MODE_NATIVE;
    as_native.k_scales = ptr::null();
    as_native.v_scales = ptr::null();
    fails(
        write(&as_native, &past),
        PARADEC_ERR_DTYPE,
        "pages.k: expected f32, f16 or bf16, got u8",
    );
    let n = ErrSetup::new(&KvCacheMode::Native);
    let mut as_q8 = n.flat.arg();
    as_q8.mode = PARADEC_CACHE_MODE_Q8;
    as_q8.k_scales = flat.k_scales;
    as_q8.v_scales = flat.v_scales;
    fails(
        write(&as_q8, &past),
        PARADEC_ERR_DTYPE,
        "pages.k: expected u8, got f32",
    );
    let mut rank3 = Buf::zeros(DType::U8, &[1, 4, 32]);
    let rank3_t = rank3.t();
    let mut r3 = flat;
    r3.k = &rank3_t;
    fails(
        write(&r3, &past),
        PARADEC_ERR_SHAPE,
        "pages.k: expected [batch, capacity, kv_heads, …]",
    );

    // Modes that cannot store these heads.
    let mut q16 = Buf::f32(&[1, 1, 1, 16], &[0.5; 16]);
    let q16t = q16.t();
    fails(
        paradec_op_attention_quant(nul, &q16t, &flat, &past, ptr::null(), 0, 1.0, &q16t),
        PARADEC_ERR_UNSUPPORTED,
        "pages.mode q8: head_dim 16 is not a multiple of 32",
    );
    let mut qb = Buf::zeros(DType::BF16, &[1, 1, 1, 32]);
    let qbt = qb.t();
    fails(
        paradec_op_attention_quant(nul, &qbt, &e5_flat, &past, ptr::null(), 0, 1.0, &qbt),
        PARADEC_ERR_UNSUPPORTED,
        "fp8e5m2 truncates fp16 values",
    );

    // Shapes the call does not fit.
    let mut k2 = Buf::f32(&[1, 1, 2, 16], &[0.5; 32]);
    let k2t = k2.t();
    let mut q2 = Buf::f32(&[1, 1, 2, 16], &[0.5; 32]);
    let q2t = q2.t();
    let n_flat = n.flat.arg();
    fails(
        paradec_op_rotary_cache_write_quant(
            nul,
            &q2t,
            &k2t,
            &k2t,
            ptr::null(),
            ptr::null(),
            &past,
            &n_flat,
        ),
        PARADEC_ERR_SHAPE,
        "pages.k: 1 kv heads, but k has 2",
    );
    let mut q3 = Buf::f32(&[1, 1, 3, 32], &[0.5; 96]);
    let p2 = Pages::new(&KvCacheMode::Q8, [1, 4, 2, 32], &[], &[]);
    let (q3t, p2a) = (q3.t(), p2.arg());
    fails(
        paradec_op_attention_quant(nul, &q3t, &p2a, &past, ptr::null(), 0, 1.0, &q3t),
        PARADEC_ERR_SHAPE,
        "pages.k: 2 kv heads do not divide q's 3 heads",
    );
    let two = Pages::new(&KvCacheMode::Q8, [2, 4, 1, 32], &[], &[]);
    let two_a = two.arg();
    fails(
        write(&two_a, &past),
        PARADEC_ERR_SHAPE,
        "a contiguous cache of 2 sequences",
    );
    let mut far = Buf::i64(&[1], &[4]);
    let far_t = far.t();
    fails(
        write(&flat, &far_t),
        PARADEC_ERR_CAPACITY,
        "past_len[0] = 4: 4 + 1 new tokens do not fit the cache capacity 4",
    );
    fails(
        attend(&flat, &far_t, &out),
        PARADEC_ERR_CAPACITY,
        "4 + 1 queries do not fit the cache capacity 4",
    );
    let mut neg = Buf::i64(&[1], &[-1]);
    let neg_t = neg.t();
    fails(
        pwrite(&table, &pool, &neg_t),
        PARADEC_ERR_INVALID_ARGUMENT,
        "past_len[0] = -1 is negative",
    );

    // Tables in device memory, of the wrong dtype or shape.
    let mut past_gpu = past;
    past_gpu.device = GPU;
    fails(
        write(&flat, &past_gpu),
        PARADEC_ERR_DEVICE,
        "past_len: expected host memory",
    );
    let mut ids_gpu = ids;
    ids_gpu.device = GPU;
    let gpu_table = paradec_block_table {
        page_ids: &ids_gpu,
        page_count: &count,
    };
    fails(
        pwrite(&gpu_table, &pool, &past),
        PARADEC_ERR_DEVICE,
        "block_table.page_ids: expected host memory",
    );
    let mut ids64 = Buf::i64(&[1, 2], &[0, 1]);
    let ids64_t = ids64.t();
    let t64 = paradec_block_table {
        page_ids: &ids64_t,
        page_count: &count,
    };
    fails(
        pwrite(&t64, &pool, &past),
        PARADEC_ERR_DTYPE,
        "block_table.page_ids: expected i32, got i64",
    );
    let mut ids_rows = Buf::i32(&[2, 1], &[0, 1]);
    let ids_rows_t = ids_rows.t();
    let t_rows = paradec_block_table {
        page_ids: &ids_rows_t,
        page_count: &count,
    };
    fails(
        pwrite(&t_rows, &pool, &past),
        PARADEC_ERR_SHAPE,
        "block_table.page_ids: expected [1, max_pages]",
    );
    let mut fcount = Buf::f32(&[1], &[2.0]);
    let fcount_t = fcount.t();
    let t_f = paradec_block_table {
        page_ids: &ids,
        page_count: &fcount_t,
    };
    fails(
        pwrite(&t_f, &pool, &past),
        PARADEC_ERR_DTYPE,
        "block_table.page_count: expected int32 or int64, got f32",
    );

    // The block table's values: checked as BlockTable::check does.
    let table_with = |ids: &[i32], count: i64| (Buf::i32(&[1, 2], ids), Buf::i64(&[1], &[count]));
    let mut cases: Vec<(Vec<i32>, i64, i64, paradec_status, &str)> = vec![
        // A page outside the pool of 4.
        (
            vec![0, 7],
            2,
            8,
            PARADEC_ERR_INVALID_ARGUMENT,
            "sequence 0's page 1 is 7, outside the pool of 4 pages",
        ),
        (
            vec![-1, 1],
            2,
            0,
            PARADEC_ERR_INVALID_ARGUMENT,
            "page 0 is -1, outside the pool",
        ),
        // A length past the sequence's pages.
        (
            vec![0, 1],
            1,
            8,
            PARADEC_ERR_CAPACITY,
            "sequence 0 reaches position 9",
        ),
        // More pages than the table's row.
        (
            vec![0, 1],
            3,
            0,
            PARADEC_ERR_INVALID_ARGUMENT,
            "sequence 0 owns 3 pages, more than the table's 2 per sequence",
        ),
        (
            vec![0, 1],
            -1,
            0,
            PARADEC_ERR_INVALID_ARGUMENT,
            "block_table.page_count[0] = -1 is negative",
        ),
    ];
    for (ids, count, past_v, want, needle) in cases.drain(..) {
        let (mut ib, mut cb) = table_with(&ids, count);
        let mut pb = Buf::i64(&[1], &[past_v]);
        let (it, ct, pt) = (ib.t(), cb.t(), pb.t());
        let t = paradec_block_table {
            page_ids: &it,
            page_count: &ct,
        };
        fails(pwrite(&t, &pool, &pt), want, needle);
        fails(pattend(&t, &pool, &pt, ptr::null()), want, needle);
    }
    // Two sequences writing the same row (a read may share it).
    let mut ids2 = Buf::i32(&[2, 2], &[0, 1, 0, 2]);
    let mut count2 = Buf::i64(&[2], &[1, 1]);
    let mut past2 = Buf::i64(&[2], &[3, 3]);
    let mut qq = Buf::f32(&[2, 1, 1, 32], &[0.5; 64]);
    let mut kk = Buf::f32(&[2, 1, 1, 32], &[0.5; 64]);
    let mut oo = Buf::zeros(DType::F32, &[2, 1, 1, 32]);
    let (i2, c2, p2t, qqt, kkt, oot) = (ids2.t(), count2.t(), past2.t(), qq.t(), kk.t(), oo.t());
    let shared = paradec_block_table {
        page_ids: &i2,
        page_count: &c2,
    };
    fails(
        paradec_op_paged_rotary_cache_write(
            nul,
            &qqt,
            &kkt,
            &kkt,
            ptr::null(),
            ptr::null(),
            &p2t,
            &shared,
            &pool,
        ),
        PARADEC_ERR_INVALID_ARGUMENT,
        "sequences 0 and 1 would both write pool row 3",
    );
    ok(paradec_op_paged_attention(
        nul,
        &qqt,
        &pool,
        &shared,
        &p2t,
        ptr::null(),
        0,
        1.0,
        &oot,
    ));
    // A read past the table's pages, a mask too narrow.
    let mut far2 = Buf::i64(&[1], &[16]);
    let far2_t = far2.t();
    fails(
        pattend(&table, &pool, &far2_t, ptr::null()),
        PARADEC_ERR_CAPACITY,
        "attention over 17 cache slots exceeds the block table's 2 pages × 8 positions",
    );
    let mut mask = Buf::f32(&[1, 0], &[]);
    let mask_t = mask.t();
    fails(
        pattend(&table, &pool, &past, &mask_t),
        PARADEC_ERR_SHAPE,
        "mask: expected [1, ≥1], got shape [1, 0]",
    );

    // Overlapping outputs.
    let mut same = flat;
    same.v = same.k;
    same.v_scales = same.k_scales;
    fails(
        write(&same, &past),
        PARADEC_ERR_INVALID_ARGUMENT,
        "overlap; outputs must not share memory",
    );
    let mut over = out;
    over.data = e.flat.descs[0].data;
    over.dtype = dt(DType::F32);
    fails(
        attend(&flat, &past, &over),
        PARADEC_ERR_INVALID_ARGUMENT,
        "overlap",
    );

    // CUDA tensors: the plain calls name their _ws form; the _ws forms need a workspace.
    let mut qg = q;
    qg.device = GPU;
    let mut kg = k;
    kg.device = GPU;
    let mut vg = v;
    vg.device = GPU;
    let mut og = out;
    og.device = GPU;
    let mut gpu_descs = e.flat.descs;
    for d in &mut gpu_descs {
        d.device = GPU;
    }
    let gpu_pages = paradec_cache_pages {
        mode: PARADEC_CACHE_MODE_Q8,
        k: &gpu_descs[0],
        k_scales: &gpu_descs[1],
        k_head_scales: ptr::null(),
        v: &gpu_descs[3],
        v_scales: &gpu_descs[4],
        v_head_scales: ptr::null(),
    };
    fails(
        paradec_op_rotary_cache_write_quant(
            nul,
            &qg,
            &kg,
            &vg,
            ptr::null(),
            ptr::null(),
            &past,
            &gpu_pages,
        ),
        PARADEC_ERR_UNSUPPORTED,
        "call paradec_op_rotary_cache_write_quant_ws",
    );
    fails(
        paradec_op_attention_quant(nul, &qg, &gpu_pages, &past, ptr::null(), 0, 1.0, &og),
        PARADEC_ERR_UNSUPPORTED,
        "call paradec_op_attention_quant_ws",
    );
    // f16 queries on the device: the _ws form needs a workspace on that device, and pages at
    // 16-byte aligned addresses.
    let mut qh = Buf::zeros(DType::F16, &[1, 1, 1, 32]).on_gpu();
    let mut oh = Buf::zeros(DType::F16, &[1, 1, 1, 32]).on_gpu();
    let (qht, oht) = (qh.t(), oh.t());
    let pattend_ws = |ws: *mut paradec_workspace, pages: &paradec_cache_pages| {
        paradec_op_paged_attention_ws(
            nul,
            ws,
            &qht,
            pages,
            &table,
            &past,
            ptr::null(),
            0,
            1.0,
            &oht,
        )
    };
    fails(
        pattend_ws(ptr::null_mut(), &gpu_pages),
        PARADEC_ERR_NULL_ARGUMENT,
        "`workspace`",
    );
    let mut host_ws = ptr::null_mut();
    ok(paradec_workspace_create(CPU, dt(DType::F32), &mut host_ws));
    fails(
        pattend_ws(host_ws, &gpu_pages),
        PARADEC_ERR_DEVICE,
        "workspace: on cpu, but the tensors are on cuda:0",
    );
    paradec_workspace_free(host_ws);
    let mut shifted = gpu_descs[0];
    shifted.byte_offset = 8;
    let mut misaligned = gpu_pages;
    misaligned.k = &shifted;
    fails(
        pattend_ws(ptr::null_mut(), &misaligned),
        PARADEC_ERR_INVALID_ARGUMENT,
        "pages.k: CUDA pages must start at a 16-byte aligned address",
    );
    fails(
        paradec_op_paged_attention_ws(
            nul,
            ptr::null_mut(),
            &qg,
            &gpu_pages,
            &table,
            &past,
            ptr::null(),
            0,
            1.0,
            &og,
        ),
        PARADEC_ERR_UNSUPPORTED,
        "the CUDA kernels take f16 or bf16 tensors, not f32",
    );
    fails(
        paradec_op_rotary_cache_write_quant(
            nul,
            &qg,
            &k,
            &v,
            ptr::null(),
            ptr::null(),
            &past,
            &flat,
        ),
        PARADEC_ERR_DEVICE,
        "is on cpu but q is on cuda:0",
    );

    // Nothing was written by any refused call.
    assert_eq!(
        (e.flat.written(), e.pool.written(), e.q.f32s(), e.k.f32s()),
        before,
        "refused calls wrote nothing"
    );
    assert!(e.out.f32s().iter().all(|&x| x == 0.0));
}

//! Malformed input: one test per validation rule. Each builds a valid packed layer, breaks one
//! thing, and checks the error's variant and that its message names the full tensor name and
//! the rule.

mod common;

use common::{save_and_map, Rng, TempDir};
use half::f16;
use paradec::quant::pack::{act_order_g_idx, pack_exl2, pack_gptq, Exl2Layout, Exl2Part};
use paradec::quant::{Exl2Weight, GptqConfig, GptqWeight, QuantConfig};
use paradec::{Error, HostData, Tensor, Weights};

const P: &str = "model.layers.3.mlp.fc1";
const K: usize = 64;
const N: usize = 40;

fn cfg4() -> GptqConfig {
    GptqConfig {
        bits: 4,
        group_size: 32,
        desc_act: true,
        sym: false,
        checkpoint_format_v2: false,
    }
}

fn gptq_base() -> Vec<(String, Tensor)> {
    let mut rng = Rng::new(11);
    let w = rng.weights(N, K);
    let g_idx = act_order_g_idx(&rng.perm(K), 32).unwrap();
    pack_gptq(&w, N, K, &cfg4(), Some(&g_idx), Some(&rng.vec(N)), P).unwrap()
}

/// Exl2 layout: 6-bit 32 rows, 4-bit 2×32 rows, 3-bit 4 rows (K = 100);
/// q_groups = [6,0, 4,6, 4,10, 3,14], 15 packed rows, N = 40 → 64 stored columns.
const KE: usize = 100;
fn exl2_base() -> Vec<(String, Tensor)> {
    let mut rng = Rng::new(12);
    let w = rng.weights(N, KE);
    let parts = [
        Exl2Part {
            bits: 6,
            group_size: 32,
            rows: 32,
        },
        Exl2Part {
            bits: 4,
            group_size: 32,
            rows: 64,
        },
        Exl2Part {
            bits: 3,
            group_size: 32,
            rows: 4,
        },
    ];
    let layout = Exl2Layout::from_parts(KE, &parts).unwrap();
    let t = pack_exl2(
        &w,
        N,
        KE,
        &layout,
        Some(&rng.perm(KE)),
        Some(&rng.vec(N)),
        P,
    )
    .unwrap();
    let qg = t.iter().find(|(n, _)| n.ends_with(".q_groups")).unwrap();
    assert_eq!(
        qg.1.host().unwrap(),
        &HostData::I16(vec![6, 0, 4, 6, 4, 10, 3, 14])
    );
    t
}

fn with(mut v: Vec<(String, Tensor)>, suffix: &str, t: Tensor) -> Vec<(String, Tensor)> {
    let name = format!("{P}.{suffix}");
    v.retain(|(n, _)| *n != name);
    v.push((name, t));
    v
}

fn without(mut v: Vec<(String, Tensor)>, suffix: &str) -> Vec<(String, Tensor)> {
    let name = format!("{P}.{suffix}");
    v.retain(|(n, _)| *n != name);
    v
}

fn get<'a>(v: &'a [(String, Tensor)], suffix: &str) -> &'a Tensor {
    &v.iter()
        .find(|(n, _)| *n == format!("{P}.{suffix}"))
        .unwrap()
        .1
}

fn i32t(v: Vec<i32>, shape: &[usize]) -> Tensor {
    Tensor::from_host(HostData::I32(v), shape).unwrap()
}
fn i16t(v: Vec<i16>) -> Tensor {
    let n = v.len();
    Tensor::from_host(HostData::I16(v), &[n]).unwrap()
}

fn load_gptq(
    t: &[(String, Tensor)],
    k: usize,
    n: usize,
    cfg: &GptqConfig,
) -> paradec::Result<GptqWeight> {
    let dir = TempDir::new("bad-gptq");
    let w = save_and_map(&dir, t);
    GptqWeight::load(&w, P, k, n, cfg)
}

fn load_exl2(t: &[(String, Tensor)], k: usize, n: usize) -> paradec::Result<Exl2Weight> {
    let dir = TempDir::new("bad-exl2");
    let w = save_and_map(&dir, t);
    Exl2Weight::load(&w, P, k, n)
}

/// Asserts a `BadFormat` error whose message contains the full tensor name and every `words`.
#[track_caller]
fn bad_format<T: std::fmt::Debug>(r: paradec::Result<T>, tensor: &str, words: &[&str]) {
    let e = r.expect_err("expected an error");
    let Error::BadFormat(m) = &e else {
        panic!("expected BadFormat, got {e:?}")
    };
    let full = format!("{P}.{tensor}");
    assert!(m.contains(&full), "message {m:?} does not name {full}");
    for w in words {
        assert!(m.contains(w), "message {m:?} does not say {w:?}");
    }
}

// ------------------------------------------------------------------------------------------ GPTQ

#[test]
fn valid_bases_load() {
    let g = load_gptq(&gptq_base(), K, N, &cfg4()).unwrap();
    assert!(g.perm().is_some());
    let e = load_exl2(&exl2_base(), KE, N).unwrap();
    assert_eq!(e.groups().len(), 4);
}

#[test]
fn gptq_qweight_wrong_dtype() {
    let t = with(
        gptq_base(),
        "qweight",
        Tensor::from_f32(vec![0.0; 8 * N], &[8, N]).unwrap(),
    );
    bad_format(
        load_gptq(&t, K, N, &cfg4()),
        "qweight",
        &["dtype", "i32", "f32"],
    );
}

#[test]
fn gptq_scales_wrong_dtype() {
    let t = with(
        gptq_base(),
        "scales",
        Tensor::from_f32(vec![1.0; 2 * N], &[2, N]).unwrap(),
    );
    bad_format(load_gptq(&t, K, N, &cfg4()), "scales", &["dtype", "f16"]);
}

#[test]
fn gptq_g_idx_wrong_dtype() {
    let t = with(
        gptq_base(),
        "g_idx",
        Tensor::from_host(HostData::I64(vec![0; K]), &[K]).unwrap(),
    );
    bad_format(load_gptq(&t, K, N, &cfg4()), "g_idx", &["dtype", "i64"]);
}

#[test]
fn gptq_qweight_shape_against_in_features() {
    // The file holds K = 64; the caller says 96.
    bad_format(
        load_gptq(&gptq_base(), 96, N, &cfg4()),
        "qweight",
        &["shape", "[12, 40]", "[8, 40]"],
    );
    // Transposed.
    let t = with(gptq_base(), "qweight", i32t(vec![0; 8 * N], &[N, 8]));
    bad_format(load_gptq(&t, K, N, &cfg4()), "qweight", &["shape"]);
}

#[test]
fn gptq_shapes_against_out_features() {
    bad_format(
        load_gptq(&gptq_base(), K, 48, &cfg4()),
        "qweight",
        &["shape"],
    );
    let t = with(gptq_base(), "qzeros", i32t(vec![0; 2 * 6], &[2, 6]));
    bad_format(load_gptq(&t, K, N, &cfg4()), "qzeros", &["shape", "[2, 5]"]);
}

#[test]
fn gptq_scales_wrong_group_count() {
    let t = with(
        gptq_base(),
        "scales",
        Tensor::from_f32_as(&[1.0; 3 * N], &[3, N], paradec::DType::F16).unwrap(),
    );
    bad_format(load_gptq(&t, K, N, &cfg4()), "scales", &["shape", "groups"]);
}

#[test]
fn gptq_g_idx_wrong_length() {
    let t = with(gptq_base(), "g_idx", i32t(vec![0; K - 1], &[K - 1]));
    bad_format(load_gptq(&t, K, N, &cfg4()), "g_idx", &["shape", "[64]"]);
}

#[test]
fn gptq_bits_5_rejected() {
    let e = GptqConfig::from_json(&serde_json::json!({"bits": 5, "group_size": 128})).unwrap_err();
    assert!(
        matches!(&e, Error::BadFormat(m) if m.contains("quantization_config.bits") && m.contains('5')),
        "{e:?}"
    );
    let cfg = GptqConfig { bits: 5, ..cfg4() };
    bad_format(
        load_gptq(&gptq_base(), K, N, &cfg),
        "qweight",
        &["bits", "5"],
    );
}

#[test]
fn gptq_bits_disagree_with_shapes() {
    let cfg = GptqConfig { bits: 8, ..cfg4() };
    bad_format(load_gptq(&gptq_base(), K, N, &cfg), "qweight", &["shape"]);
}

#[test]
fn gptq_g_idx_out_of_range() {
    let mut g: Vec<i32> = (0..K as i32).map(|k| k / 32).collect();
    g[5] = 2; // two groups: 0 and 1
    let t = with(gptq_base(), "g_idx", i32t(g.clone(), &[K]));
    bad_format(
        load_gptq(&t, K, N, &cfg4()),
        "g_idx",
        &["g_idx[5] = 2", "outside"],
    );
    g[5] = -1;
    let t = with(gptq_base(), "g_idx", i32t(g, &[K]));
    bad_format(load_gptq(&t, K, N, &cfg4()), "g_idx", &["-1", "outside"]);
}

#[test]
fn gptq_missing_tensor() {
    let t = without(gptq_base(), "qzeros");
    let e = load_gptq(&t, K, N, &cfg4()).unwrap_err();
    assert!(
        matches!(&e, Error::NotFound(m) if m.contains(&format!("{P}.qzeros"))),
        "{e:?}"
    );
}

#[test]
fn gptq_desc_act_requires_g_idx() {
    let t = without(gptq_base(), "g_idx");
    let e = load_gptq(&t, K, N, &cfg4()).unwrap_err();
    assert!(
        matches!(&e, Error::NotFound(m) if m.contains(&format!("{P}.g_idx")) && m.contains("desc_act")),
        "{e:?}"
    );
    // Without desc_act a missing g_idx means sequential groups.
    let cfg = GptqConfig {
        desc_act: false,
        ..cfg4()
    };
    assert!(load_gptq(&t, K, N, &cfg).is_ok());
}

#[test]
fn gptq_non_finite_scale() {
    let mut s = vec![0.5f32; 2 * N];
    s[7] = f32::INFINITY;
    let t = with(
        gptq_base(),
        "scales",
        Tensor::from_f32_as(&s, &[2, N], paradec::DType::F16).unwrap(),
    );
    bad_format(
        load_gptq(&t, K, N, &cfg4()),
        "scales",
        &["element 7", "finite"],
    );
}

#[test]
fn gptq_bias_wrong_shape_and_dtype() {
    let t = with(
        gptq_base(),
        "bias",
        Tensor::from_f32(vec![0.0; N + 1], &[N + 1]).unwrap(),
    );
    bad_format(load_gptq(&t, K, N, &cfg4()), "bias", &["shape"]);
    let t = with(gptq_base(), "bias", i32t(vec![0; N], &[N]));
    bad_format(load_gptq(&t, K, N, &cfg4()), "bias", &["dtype"]);
}

#[test]
fn gptq_group_size_invalid() {
    let e = GptqConfig::from_json(&serde_json::json!({"bits": 4, "group_size": 0})).unwrap_err();
    assert!(
        matches!(&e, Error::BadFormat(m) if m.contains("group_size")),
        "{e:?}"
    );
    let cfg = GptqConfig {
        group_size: -7,
        ..cfg4()
    };
    bad_format(
        load_gptq(&gptq_base(), K, N, &cfg),
        "qweight",
        &["group_size", "-7"],
    );
}

#[test]
fn gptq_zero_and_huge_dims_do_not_panic() {
    let base = gptq_base();
    let dir = TempDir::new("huge");
    let w = save_and_map(&dir, &base);
    assert!(matches!(
        GptqWeight::load(&w, P, 0, N, &cfg4()),
        Err(Error::BadInput(_))
    ));
    assert!(matches!(
        GptqWeight::load(&w, P, K, 0, &cfg4()),
        Err(Error::BadInput(_))
    ));
    for (k, n) in [
        (usize::MAX, N),
        (K, usize::MAX),
        (usize::MAX / 4, usize::MAX / 4),
        (1 << 62, 1 << 62),
    ] {
        let r = GptqWeight::load(&w, P, k, n, &cfg4());
        assert!(
            matches!(r, Err(Error::BadInput(_)) | Err(Error::BadFormat(_))),
            "{k} {n}: {r:?}"
        );
        let r = Exl2Weight::load(&w, P, k, n);
        assert!(r.is_err());
    }
    let cfg = GptqConfig {
        group_size: i64::MAX,
        ..cfg4()
    };
    assert!(GptqWeight::load(&w, P, K, N, &cfg).is_err());
}

#[test]
fn quant_config_errors() {
    let e =
        QuantConfig::from_json(&serde_json::json!({"quant_method": "awq", "bits": 4})).unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported(m) if m.contains("awq")),
        "{e:?}"
    );
    let e = QuantConfig::from_json(&serde_json::json!([1, 2])).unwrap_err();
    assert!(matches!(e, Error::BadFormat(_)));
    let e = QuantConfig::from_json(&serde_json::json!({"quant_method": "gptq", "bits": "four"}))
        .unwrap_err();
    assert!(
        matches!(&e, Error::BadFormat(m) if m.contains("quantization_config.bits")),
        "{e:?}"
    );
    let e = QuantConfig::from_json(
        &serde_json::json!({"quant_method": "gptq", "bits": 4, "desc_act": 1}),
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::BadFormat(m) if m.contains("desc_act")),
        "{e:?}"
    );
    let e = QuantConfig::from_json(&serde_json::json!({"quant_method": "exl2", "bits": -1}))
        .unwrap_err();
    assert!(
        matches!(&e, Error::BadFormat(m) if m.contains("bits")),
        "{e:?}"
    );
}

// ------------------------------------------------------------------------------------------ EXL2

#[test]
fn exl2_q_invperm_not_a_permutation() {
    let mut ip: Vec<i32> = (0..KE as i32).collect();
    ip[9] = 3;
    let t = with(exl2_base(), "q_invperm", i32t(ip.clone(), &[KE]));
    bad_format(
        load_exl2(&t, KE, N),
        "q_invperm",
        &["not a permutation", "3"],
    );
    ip[9] = KE as i32;
    let t = with(exl2_base(), "q_invperm", i32t(ip.clone(), &[KE]));
    bad_format(
        load_exl2(&t, KE, N),
        "q_invperm",
        &["not a permutation", "outside"],
    );
    ip[9] = -4;
    let t = with(exl2_base(), "q_invperm", i32t(ip, &[KE]));
    bad_format(
        load_exl2(&t, KE, N),
        "q_invperm",
        &["not a permutation", "-4"],
    );
}

#[test]
fn exl2_q_invperm_wrong_dtype_and_shape() {
    let t = with(
        exl2_base(),
        "q_invperm",
        Tensor::from_host(HostData::I16(vec![0; KE]), &[KE]).unwrap(),
    );
    bad_format(load_exl2(&t, KE, N), "q_invperm", &["dtype"]);
    bad_format(load_exl2(&exl2_base(), KE + 1, N), "q_invperm", &["shape"]);
}

#[test]
fn exl2_q_groups_width_order() {
    // 4-bit group before the 6-bit one.
    let t = with(
        exl2_base(),
        "q_groups",
        i16t(vec![4, 0, 6, 4, 4, 10, 3, 14]),
    );
    bad_format(load_exl2(&t, KE, N), "q_groups", &["descending"]);
}

#[test]
fn exl2_q_groups_bad_width() {
    let t = with(
        exl2_base(),
        "q_groups",
        i16t(vec![7, 0, 4, 6, 4, 10, 3, 14]),
    );
    bad_format(load_exl2(&t, KE, N), "q_groups", &["width 7"]);
}

#[test]
fn exl2_q_groups_offsets_out_of_order() {
    let t = with(
        exl2_base(),
        "q_groups",
        i16t(vec![6, 0, 4, 10, 4, 6, 3, 14]),
    );
    bad_format(load_exl2(&t, KE, N), "q_groups", &["increase"]);
    let t = with(exl2_base(), "q_groups", i16t(vec![6, 0, 4, 6, 4, 6, 3, 14]));
    bad_format(load_exl2(&t, KE, N), "q_groups", &["increase"]);
    let t = with(
        exl2_base(),
        "q_groups",
        i16t(vec![6, 2, 4, 6, 4, 10, 3, 14]),
    );
    bad_format(load_exl2(&t, KE, N), "q_groups", &["packed row 0"]);
}

#[test]
fn exl2_q_groups_offset_beyond_q_weight() {
    let t = with(
        exl2_base(),
        "q_groups",
        i16t(vec![6, 0, 4, 6, 4, 10, 3, 15]),
    );
    bad_format(
        load_exl2(&t, KE, N),
        "q_groups",
        &["beyond", &format!("{P}.q_weight")],
    );
    // Offsets read as unsigned 16-bit: -1 is 65535.
    let t = with(
        exl2_base(),
        "q_groups",
        i16t(vec![6, 0, 4, 6, 4, 10, 3, -1]),
    );
    bad_format(load_exl2(&t, KE, N), "q_groups", &["65535", "beyond"]);
}

#[test]
fn exl2_q_groups_fractional_rows() {
    // A 6-bit group spanning 5 packed rows holds 26.67 rows.
    let t = with(
        exl2_base(),
        "q_groups",
        i16t(vec![6, 0, 4, 5, 4, 10, 3, 14]),
    );
    bad_format(load_exl2(&t, KE, N), "q_groups", &["whole number"]);
}

#[test]
fn exl2_q_groups_odd_length_and_dtype() {
    let t = with(exl2_base(), "q_groups", i16t(vec![6, 0, 4, 6, 4, 10, 3]));
    bad_format(load_exl2(&t, KE, N), "q_groups", &["shape"]);
    let t = with(
        exl2_base(),
        "q_groups",
        i32t(vec![6, 0, 4, 6, 4, 10, 3, 14], &[8]),
    );
    bad_format(load_exl2(&t, KE, N), "q_groups", &["dtype", "i16"]);
}

#[test]
fn exl2_rows_do_not_add_up_to_in_features() {
    // K = 60: the 6-bit and first 4-bit group already hold 64 rows.
    let r = load_exl2(
        &with(exl2_base(), "q_invperm", i32t((0..60).collect(), &[60])),
        60,
        N,
    );
    bad_format(r, "q_groups", &["more than in_features = 60"]);
    // K = 120: the last 3-bit group (1 packed row, 10 rows at most) cannot hold 24 rows.
    let r = load_exl2(
        &with(exl2_base(), "q_invperm", i32t((0..120).collect(), &[120])),
        120,
        N,
    );
    bad_format(r, "q_groups", &["last group", "packed rows"]);
}

#[test]
fn exl2_q_weight_truncated_rows() {
    let qw = get(&exl2_base(), "q_weight").as_i32().unwrap()[..14 * 64].to_vec();
    let t = with(exl2_base(), "q_weight", i32t(qw, &[14, 64]));
    bad_format(load_exl2(&t, KE, N), "q_groups", &["beyond", "q_weight"]);
}

#[test]
fn exl2_q_weight_unpadded_width() {
    let t = with(exl2_base(), "q_weight", i32t(vec![0; 15 * N], &[15, N]));
    bad_format(load_exl2(&t, KE, N), "q_weight", &["shape", "64"]);
}

#[test]
fn exl2_q_scale_shape() {
    let t = with(exl2_base(), "q_scale", i32t(vec![0; 4 * 5], &[4, 5]));
    bad_format(load_exl2(&t, KE, N), "q_scale", &["shape", "[4, 8]"]);
}

#[test]
fn exl2_q_scale_max_length_and_finite() {
    let t = with(
        exl2_base(),
        "q_scale_max",
        Tensor::from_f32_as(&[1.0; 3], &[3], paradec::DType::F16).unwrap(),
    );
    bad_format(load_exl2(&t, KE, N), "q_scale_max", &["shape"]);
    let v = vec![f16::ONE, f16::NAN, f16::ONE, f16::ONE];
    let t = with(
        exl2_base(),
        "q_scale_max",
        Tensor::from_host(HostData::F16(v), &[4]).unwrap(),
    );
    bad_format(
        load_exl2(&t, KE, N),
        "q_scale_max",
        &["element 1", "finite"],
    );
}

#[test]
fn exl2_q_perm_must_match_invperm() {
    let base = exl2_base();
    let ip = get(&base, "q_invperm").as_i32().unwrap().to_vec();
    let mut perm = vec![0i32; KE];
    for (k, &j) in ip.iter().enumerate() {
        perm[j as usize] = k as i32;
    }
    assert!(load_exl2(
        &with(exl2_base(), "q_perm", i32t(perm.clone(), &[KE])),
        KE,
        N
    )
    .is_ok());
    perm.swap(0, 1);
    let t = with(exl2_base(), "q_perm", i32t(perm, &[KE]));
    bad_format(load_exl2(&t, KE, N), "q_perm", &["argsort"]);
}

#[test]
fn exl2_missing_tensor_and_padded_bias() {
    let e = load_exl2(&without(exl2_base(), "q_scale"), KE, N).unwrap_err();
    assert!(
        matches!(&e, Error::NotFound(m) if m.contains(&format!("{P}.q_scale"))),
        "{e:?}"
    );
    // A bias padded to N_pad = 64 is accepted (padding dropped); other lengths are not.
    let t = with(
        exl2_base(),
        "bias",
        Tensor::from_f32(vec![0.25; 64], &[64]).unwrap(),
    );
    assert_eq!(
        load_exl2(&t, KE, N).unwrap().bias().unwrap(),
        &[0.25; N][..]
    );
    let t = with(
        exl2_base(),
        "bias",
        Tensor::from_f32(vec![0.25; 50], &[50]).unwrap(),
    );
    bad_format(load_exl2(&t, KE, N), "bias", &["shape"]);
}

// ------------------------------------------------------------------------------ files and calls

#[test]
fn truncated_file() {
    let dir = TempDir::new("trunc");
    let path = dir.path().join("model.safetensors");
    paradec::quant::pack::save_tensors(&path, &gptq_base()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for cut in [bytes.len() - 1, bytes.len() / 2, 40, 7, 0] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = Weights::from_files(std::slice::from_ref(&path))
            .err()
            .unwrap_or_else(|| panic!("cut {cut} loaded"));
        assert!(
            matches!(&e, Error::BadFormat(m) | Error::Io(m) if m.contains("model.safetensors")),
            "cut {cut}: {e:?}"
        );
    }
}

#[test]
fn forward_argument_lengths() {
    let g = load_gptq(&gptq_base(), K, N, &cfg4()).unwrap();
    let mut out = vec![0.0; 2 * N];
    assert!(matches!(
        g.forward(&vec![0.0; 2 * K - 1], 2, &mut out, false),
        Err(Error::BadInput(_))
    ));
    assert!(matches!(
        g.forward(&vec![0.0; 2 * K], 2, &mut out[..N], false),
        Err(Error::BadInput(_))
    ));
    assert!(matches!(
        g.forward(&[], usize::MAX, &mut out, false),
        Err(Error::BadInput(_))
    ));
    let e = load_exl2(&exl2_base(), KE, N).unwrap();
    assert!(matches!(
        e.forward(&vec![0.0; KE], 1, &mut out, false),
        Err(Error::BadInput(_))
    ));
    assert!(g.forward(&[], 0, &mut [], false).is_ok());
}

#[test]
fn safetensors_offsets_that_overflow() {
    // Eight U8 tensors of 2^61 − 1 bytes each: the offsets pass safetensors' per-tensor checks and
    // sum to 2^64 − 8; adding the header length then overflows (a panic in debug builds of
    // safetensors 0.8). `Weights` must reject the file first.
    let sz: u64 = (1 << 61) - 1;
    let mut header = String::from("{");
    for i in 0..8u64 {
        if i > 0 {
            header.push(',');
        }
        header += &format!(
            r#""t{i}":{{"dtype":"U8","shape":[{sz}],"data_offsets":[{},{}]}}"#,
            i * sz,
            (i + 1) * sz
        );
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    let dir = TempDir::new("overflow");
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let e = Weights::from_files(std::slice::from_ref(&path))
        .err()
        .expect("must not load");
    assert!(
        matches!(&e, Error::BadFormat(m) if m.contains("past the end")),
        "{e:?}"
    );
}

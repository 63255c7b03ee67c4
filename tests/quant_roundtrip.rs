//! Round trips: pack → save → load → dequantize / forward, for every width, several group sizes,
//! act-order, shorter last groups and padded N; plus quantized copies of a dense model directory.

mod common;

use common::{dense_ref, rel_err, save_and_map, Rng, TempDir};
use half::f16;
use paradec::quant::pack::{
    act_order_g_idx, pack_exl2, pack_gptq, quantize_model_dir, Exl2Layout, Exl2Part, Exl2Recipe,
    QuantSpec,
};
use paradec::quant::{Exl2Weight, GptqConfig, GptqWeight, QuantConfig, QuantWeight};
use paradec::{Tensor, Weights};

const MS: [usize; 3] = [1, 3, 17];

/// f16-representable values (as in a real f16 checkpoint), so the bound test is exact.
fn f16_round(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32());
}

/// forward == dense matmul of dequantize (+ bias), for m = 1, 3, 17, fresh and accumulating.
fn check_forward(q: &QuantWeight, rng: &mut Rng, tag: &str) {
    let (k, n) = (q.in_features(), q.out_features());
    let dense = q.dequantize();
    for m in MS {
        let x = rng.vec(m * k);
        let want = dense_ref(&dense, n, k, &x, m, q.bias());
        let mut out = vec![f32::NAN; m * n];
        q.forward(&x, m, &mut out, false).unwrap();
        let e = rel_err(&out, &want);
        assert!(e < 1e-5, "{tag} m={m}: forward rel err {e}");
        // accumulate: out += x·Wᵀ + b
        let base = rng.vec(m * n);
        let mut acc = base.clone();
        q.forward(&x, m, &mut acc, true).unwrap();
        let want_acc: Vec<f32> = want.iter().zip(&base).map(|(a, b)| a + b).collect();
        let e = rel_err(&acc, &want_acc);
        assert!(e < 1e-5, "{tag} m={m}: accumulate rel err {e}");
    }
}

fn cfg(bits: u32, group_size: i64, sym: bool, v2: bool, desc_act: bool) -> GptqConfig {
    GptqConfig {
        bits,
        group_size,
        desc_act,
        sym,
        checkpoint_format_v2: v2,
    }
}

fn gptq_case(rng: &mut Rng, cfg: GptqConfig, k: usize, n: usize, bias: bool) {
    let tag = format!("gptq {cfg:?} K{k} N{n} bias{bias}");
    let (bits, gs, act) = (cfg.bits, cfg.group_size, cfg.desc_act);
    let mut w = rng.weights(n, k);
    f16_round(&mut w);
    let g_idx = if act {
        Some(act_order_g_idx(&rng.perm(k), gs).unwrap())
    } else {
        None
    };
    let b = bias.then(|| {
        let mut b = rng.vec(n);
        f16_round(&mut b);
        b
    });
    let packed = pack_gptq(&w, n, k, &cfg, g_idx.as_deref(), b.as_deref(), "layer.proj").unwrap();
    let dir = TempDir::new("gptq");
    let weights = save_and_map(&dir, &packed);
    let q = GptqWeight::load(&weights, "layer.proj", k, n, &cfg).unwrap();
    assert_eq!(
        q.perm().is_some(),
        act && g_idx.as_ref().unwrap().windows(2).any(|p| p[0] > p[1]),
        "{tag}"
    );
    let d = q.dequantize();
    let groups = cfg.groups(k);
    let gsz = if gs > 0 { gs as usize } else { k };
    for c in 0..n {
        for r in 0..k {
            let g = g_idx.as_ref().map_or(r / gsz, |gi| gi[r] as usize);
            assert!(g < groups);
            let s = q.scales()[g * n + c].to_f32();
            let err = (d[c * k + r] - w[c * k + r]).abs();
            assert!(
                err <= s * 0.5 * (1.0 + 1e-5) + 1e-7,
                "{tag}: w[{c},{r}] = {} → {} (err {err}, step {s})",
                w[c * k + r],
                d[c * k + r]
            );
        }
    }
    assert_eq!(q.bias(), b.as_deref());
    assert_eq!(q.numel(), k * n);
    assert!(q.storage_bytes() >= k * n * bits as usize / 8, "{tag}");
    check_forward(&QuantWeight::Gptq(q), rng, &tag);
}

#[test]
fn gptq_every_width_and_group_size() {
    let mut rng = Rng::new(1);
    for bits in [2, 3, 4, 8] {
        for (gs, k) in [(-1, 96), (32, 96), (64, 160), (128, 160), (48, 100)] {
            for n in [5, 33] {
                gptq_case(&mut rng, cfg(bits, gs, false, false, false), k, n, n == 5);
            }
        }
    }
}

#[test]
fn gptq_sym_asym_classic_v2() {
    let mut rng = Rng::new(2);
    for bits in [2, 3, 4, 8] {
        for sym in [false, true] {
            for v2 in [false, true] {
                gptq_case(&mut rng, cfg(bits, 32, sym, v2, false), 96, 11, true);
            }
        }
    }
}

#[test]
fn gptq_act_order() {
    let mut rng = Rng::new(3);
    for bits in [2, 3, 4, 8] {
        for (gs, k) in [(32, 96), (64, 160), (-1, 64)] {
            let c = cfg(bits, gs, bits % 2 == 0, bits == 4, true);
            gptq_case(&mut rng, c, k, 9, true);
        }
    }
}

#[test]
fn gptq_all_nonnegative_group_classic() {
    // Classic checkpoints cannot store zero 0: the packer must still meet the half-step bound.
    let mut rng = Rng::new(4);
    let (n, k) = (3, 64);
    let mut w: Vec<f32> = (0..n * k).map(|_| rng.uniform().abs()).collect();
    f16_round(&mut w);
    for bits in [2, 3, 4, 8] {
        let cfg = GptqConfig {
            bits,
            group_size: 32,
            desc_act: false,
            sym: false,
            checkpoint_format_v2: false,
        };
        let packed = pack_gptq(&w, n, k, &cfg, None, None, "p").unwrap();
        let dir = TempDir::new("gptq-nonneg");
        let q = GptqWeight::load(&save_and_map(&dir, &packed), "p", k, n, &cfg).unwrap();
        let d = q.dequantize();
        for c in 0..n {
            for r in 0..k {
                let s = q.scales()[(r / 32) * n + c].to_f32();
                assert!((d[c * k + r] - w[c * k + r]).abs() <= s * 0.5 * (1.0 + 1e-5) + 1e-7);
            }
        }
    }
}

fn exl2_case(rng: &mut Rng, parts: &[Exl2Part], n: usize, permute: bool, bias: bool) {
    let k: usize = parts.iter().map(|p| p.rows).sum();
    let tag = format!("exl2 {parts:?} K{k} N{n} permute{permute} bias{bias}");
    let layout = Exl2Layout::from_parts(k, parts).unwrap();
    let mut w = rng.weights(n, k);
    f16_round(&mut w);
    let perm = permute.then(|| rng.perm(k));
    let b = bias.then(|| {
        let mut b = rng.vec(n);
        f16_round(&mut b);
        b
    });
    let packed = pack_exl2(&w, n, k, &layout, perm.as_deref(), b.as_deref(), "m.fc").unwrap();
    let dir = TempDir::new("exl2");
    let weights = save_and_map(&dir, &packed);
    let q = Exl2Weight::load(&weights, "m.fc", k, n).unwrap();
    assert_eq!(q.padded_out_features(), n.div_ceil(32) * 32);
    let groups: Vec<(u32, usize)> = q.groups().iter().map(|g| (g.bits, g.rows)).collect();
    assert_eq!(groups, layout.groups(), "{tag}");
    let d = q.dequantize();
    for (g, gr) in q.groups().iter().enumerate() {
        for j in gr.first_row..gr.first_row + gr.rows {
            let f = q.q_perm()[j] as usize;
            assert_eq!(f, perm.as_ref().map_or(j, |p| p[j]));
            for c in 0..n {
                let s = q.scale(g, c);
                let err = (d[c * k + f] - w[c * k + f]).abs();
                assert!(
                    err <= s * 0.5 * (1.0 + 1e-5) + 1e-7,
                    "{tag}: w[{c},{f}] = {} → {} (err {err}, step {s})",
                    w[c * k + f],
                    d[c * k + f]
                );
            }
        }
    }
    assert_eq!(q.bias(), b.as_deref());
    check_forward(&QuantWeight::Exl2(q), rng, &tag);
}

fn part(bits: u32, group_size: usize, rows: usize) -> Exl2Part {
    Exl2Part {
        bits,
        group_size,
        rows,
    }
}

#[test]
fn exl2_every_width() {
    let mut rng = Rng::new(5);
    for bits in [2, 3, 4, 5, 6, 8] {
        for gs in [32, 64, 128] {
            // K = 96 and K = 100 (shorter last group), N = 37 needs padding to 64.
            exl2_case(&mut rng, &[part(bits, gs, 96)], 37, false, false);
            exl2_case(&mut rng, &[part(bits, gs, 100)], 5, true, true);
        }
    }
    // 16-row groups at 2 bits.
    exl2_case(&mut rng, &[part(2, 16, 90)], 7, true, false);
}

#[test]
fn exl2_mixed_widths() {
    let mut rng = Rng::new(6);
    let parts = [
        part(8, 32, 32),
        part(6, 32, 64),
        part(5, 64, 64),
        part(4, 128, 128),
        part(3, 32, 32),
        part(2, 16, 17),
    ];
    exl2_case(&mut rng, &parts, 33, true, true);
    exl2_case(
        &mut rng,
        &[part(6, 32, 32), part(4, 64, 70)],
        64,
        true,
        false,
    );
    exl2_case(
        &mut rng,
        &[part(8, 32, 32), part(3, 128, 3)],
        1,
        false,
        true,
    );
}

/// A dense "model": config.json + f16 linear weights, a bias and a norm.
fn dense_model(dir: &TempDir, rng: &mut Rng) -> Vec<(String, Tensor)> {
    let mut tensors = Vec::new();
    for (name, n, k) in [
        ("h.0.attn.qkv", 48, 96),
        ("h.0.mlp.fc_in", 100, 96),
        ("h.0.mlp.fc_out", 96, 100),
    ] {
        let w = rng.weights(n, k);
        tensors.push((
            format!("{name}.weight"),
            Tensor::from_f32_as(&w, &[n, k], paradec::DType::F16).unwrap(),
        ));
        tensors.push((
            format!("{name}.bias"),
            Tensor::from_f32(rng.vec(n), &[n]).unwrap(),
        ));
    }
    tensors.push((
        "h.0.ln.weight".into(),
        Tensor::from_f32(rng.vec(96), &[96]).unwrap(),
    ));
    tensors.push((
        "wte.weight".into(),
        Tensor::from_f32(rng.vec(10 * 96), &[10, 96]).unwrap(),
    ));
    paradec::quant::pack::save_tensors(dir.path().join("model.safetensors"), &tensors).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "gptj", "n_embd": 96}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("generation_config.json"), "{}").unwrap();
    tensors
}

fn check_quantized_dir(dst: &TempDir, dense: &[(String, Tensor)], expect_method: &str) {
    let cfg = QuantConfig::from_model_dir(dst.path()).unwrap().unwrap();
    assert_eq!(cfg.method(), expect_method);
    let w = Weights::from_dir(dst.path()).unwrap();
    assert!(dst.path().join("generation_config.json").exists());
    for (name, t) in dense {
        let prefix = name.strip_suffix(".weight").unwrap_or("");
        if name.starts_with("h.0.") && t.shape().len() == 2 {
            assert!(!w.contains(name), "{name} should be quantized");
            let (n, k) = (t.shape()[0], t.shape()[1]);
            let q = QuantWeight::load(&w, prefix, k, n, &cfg).unwrap();
            let d = q.dequantize();
            let orig = t.f32_values().unwrap();
            let amax = orig.iter().fold(0f32, |a, x| a.max(x.abs()));
            let e = d
                .iter()
                .zip(orig.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(e <= amax * 0.5, "{name}: max error {e}");
            // The dense bias was copied unchanged and is picked up as the layer's bias.
            let b = w.get(&format!("{prefix}.bias")).unwrap();
            assert_eq!(q.bias().unwrap(), &b.f32_values().unwrap()[..]);
        } else {
            let copy = w.get(name).unwrap();
            assert_eq!(copy.dtype(), t.dtype());
            assert_eq!(
                copy.host().unwrap(),
                t.host().unwrap(),
                "{name} copied unchanged"
            );
        }
    }
}

#[test]
fn quantize_model_dir_gptq_and_exl2() {
    let mut rng = Rng::new(7);
    let src = TempDir::new("dense");
    let dense = dense_model(&src, &mut rng);
    let which = |n: &str| n.starts_with("h.0.");

    for (bits, act, v2) in [
        (4, true, false),
        (3, false, true),
        (2, true, true),
        (8, false, false),
    ] {
        let dst = TempDir::new("q-gptq");
        let cfg = GptqConfig {
            bits,
            group_size: 32,
            desc_act: act,
            sym: false,
            checkpoint_format_v2: v2,
        };
        let done =
            quantize_model_dir(src.path(), dst.path(), &QuantSpec::Gptq(cfg), &which).unwrap();
        assert_eq!(done.len(), 3);
        check_quantized_dir(&dst, &dense, "gptq");
        assert_eq!(
            QuantConfig::from_model_dir(dst.path()).unwrap(),
            Some(QuantConfig::Gptq(cfg))
        );
        if !act {
            // Without any config, the layout and settings are found from the tensors.
            std::fs::write(dst.path().join("config.json"), "{}").unwrap();
            let inferred = QuantConfig::from_model_dir(dst.path()).unwrap().unwrap();
            let QuantConfig::Gptq(c) = inferred else {
                panic!("expected GPTQ")
            };
            assert_eq!((c.bits, c.group_size), (bits, 32));
        }
    }

    let recipe = Exl2Recipe {
        parts: vec![(8, 32, 0.25), (4, 64, 0.5), (3, 32, 1.0)],
        permute: true,
    };
    let dst = TempDir::new("q-exl2");
    quantize_model_dir(src.path(), dst.path(), &QuantSpec::Exl2(recipe), &which).unwrap();
    check_quantized_dir(&dst, &dense, "exl2");
    // Quantizing a quantized directory again is refused.
    let again = TempDir::new("q-again");
    let e = quantize_model_dir(
        dst.path(),
        again.path(),
        &QuantSpec::Gptq(GptqConfig::default()),
        &which,
    );
    assert!(matches!(e, Err(paradec::Error::BadInput(_))), "{e:?}");
    // Detection by tensor names alone.
    std::fs::write(dst.path().join("config.json"), "{}").unwrap();
    assert_eq!(
        QuantConfig::from_model_dir(dst.path())
            .unwrap()
            .unwrap()
            .method(),
        "exl2"
    );
    // A dense directory has no quantization.
    assert_eq!(QuantConfig::from_model_dir(src.path()).unwrap(), None);
}

#[test]
fn exl2_recipe_layouts() {
    let r = Exl2Recipe {
        parts: vec![(8, 32, 0.1), (4, 64, 0.4), (3, 128, 1.0)],
        permute: false,
    };
    // K = 96: no whole 8-bit or 4-bit group fits the fractions → one 3-bit group of 96.
    assert_eq!(r.layout(96).unwrap().groups(), &[(3, 96)]);
    // K = 1024: 8-bit 3 groups (96 rows), 4-bit 6 groups (384 rows), 3-bit 544 = 4·128 + 32.
    let l = r.layout(1024).unwrap();
    assert_eq!(l.in_features(), 1024);
    assert_eq!(&l.groups()[..3], &[(8, 32); 3]);
    assert_eq!(l.groups().last(), Some(&(3, 32)));
}

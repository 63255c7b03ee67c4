//! GPTQ loading. Input: byte 0 picks the mode, bytes 1..7 the settings
//! (flags: bits = [2,3,4,8][f & 3], desc_act f & 4, v2 f & 8, sym f & 16; group-size selector;
//! K = 1 + u16 % 512; N = 1 + u16 % 96).
//! - even mode: the rest is a safetensors file holding `l.qweight`, `l.qzeros`, ...
//! - odd mode: tensors of the expected shapes (one possibly perturbed, dtype possibly wrong)
//!   are filled from the rest of the input and written with `save_safetensors`.
//!
//! A successful load must dequantize and multiply without panicking.

use paradec::quant::{GptqConfig, GptqWeight, QuantWeight};
use paradec::weights::save_safetensors;
use paradec::{HostData, Tensor};

use super::common::{self, fill, Bytes};

const GROUP_SIZES: [i64; 10] = [-1, 4, 8, 16, 32, 64, 128, 0, -2, 3];

/// One fuzz input through the code this target covers.
pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let mode = b.u8();
    let f = b.u8();
    let cfg = GptqConfig {
        bits: [2, 3, 4, 8][(f & 3) as usize],
        group_size: GROUP_SIZES[b.u8() as usize % GROUP_SIZES.len()],
        desc_act: f & 4 != 0,
        checkpoint_format_v2: f & 8 != 0,
        sym: f & 16 != 0,
    };
    let k = 1 + b.u16() as usize % 512;
    let n = 1 + b.u16() as usize % 96;
    let weights = if mode & 1 == 0 {
        match common::weights_from_bytes("gptq", b.rest()) {
            Ok(w) => w,
            Err(_) => return,
        }
    } else {
        let p = b.u8(); // which tensor to perturb, and how
        let delta = b.u8() as usize % 3; // 0: -1, 1: 0, 2: +1 on one dimension
        let flags = b.u8();
        let src = b.rest();
        let bits = cfg.bits as usize;
        let groups = cfg.groups(k).max(1);
        let mut shapes = [
            vec![(k * bits).div_ceil(32), n],
            vec![groups, (n * bits).div_ceil(32)],
            vec![groups, n],
            vec![k],
            vec![n],
        ];
        let which = p as usize % 8;
        if which < 5 {
            let dims = shapes[which].len();
            let d = &mut shapes[which][(p as usize >> 3) % dims];
            *d = (*d + delta).saturating_sub(1);
        }
        let qweight = fill(src, shapes[0].iter().product(), 4, |c| {
            i32::from_le_bytes([c[0], c[1], c[2], c[3]])
        });
        let qzeros = fill(
            src.get(7..).unwrap_or(&[]),
            shapes[1].iter().product(),
            4,
            |c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        );
        // Scales: small positive f16 values from the bytes (sometimes anything, incl. NaN).
        let raw_scales = flags & 1 != 0;
        let scales = fill(
            src.get(3..).unwrap_or(&[]),
            shapes[2].iter().product(),
            2,
            |c| {
                let bits = u16::from_le_bytes([c[0], c[1]]);
                half::f16::from_bits(if raw_scales { bits } else { bits & 0x3bff })
            },
        );
        // g_idx: mostly valid (byte % groups, or sequential), sometimes raw.
        let g_idx = fill(
            src.get(1..).unwrap_or(&[]),
            shapes[3].iter().product(),
            1,
            |c| {
                if flags & 2 != 0 {
                    c[0] as i8 as i32
                } else {
                    (c[0] as usize % groups) as i32
                }
            },
        );
        let mut tensors: Vec<(String, Tensor)> = vec![
            (
                "l.qweight".into(),
                Tensor::from_host(HostData::I32(qweight), &shapes[0]).unwrap(),
            ),
            (
                "l.qzeros".into(),
                Tensor::from_host(HostData::I32(qzeros), &shapes[1]).unwrap(),
            ),
            (
                "l.scales".into(),
                Tensor::from_host(HostData::F16(scales), &shapes[2]).unwrap(),
            ),
        ];
        if flags & 4 != 0 || cfg.desc_act {
            tensors.push((
                "l.g_idx".into(),
                Tensor::from_host(HostData::I32(g_idx), &shapes[3]).unwrap(),
            ));
        }
        if flags & 8 != 0 {
            let bias = fill(src, shapes[4].iter().product(), 1, |c| c[0] as f32 / 16.0);
            tensors.push(("l.bias".into(), Tensor::from_f32(bias, &shapes[4]).unwrap()));
        }
        if flags & 16 != 0 {
            // A wrong dtype for one tensor.
            let i = (flags as usize >> 5) % tensors.len();
            let t = &tensors[i].1;
            let shape = t.shape().to_vec();
            tensors[i].1 = Tensor::from_host(HostData::I16(vec![1; t.numel()]), &shape).unwrap();
        }
        if flags & 128 != 0 && tensors.len() > 1 {
            tensors.remove(p as usize % tensors.len());
        }
        let path = common::scratch_dir("gptq-s").join("model.safetensors");
        let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
        save_safetensors(&path, &refs, None).unwrap();
        paradec::Weights::from_files(&[path]).unwrap()
    };
    let loaded = GptqWeight::load(&weights, "l", k, n, &cfg);
    common::debug(&loaded);
    if let Ok(q) = loaded {
        // Every row's group must be in range and the groups must cover K.
        assert_eq!(*q.group_start().last().unwrap(), k);
        if let Some(p) = q.perm() {
            let mut seen = vec![false; k];
            p.iter().for_each(|&i| seen[i as usize] = true);
            assert!(seen.iter().all(|&s| s));
        }
        common::exercise(&QuantWeight::Gptq(q));
    }
}

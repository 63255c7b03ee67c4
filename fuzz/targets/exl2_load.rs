//! EXL2 loading. Input: byte 0 picks the mode; K = 1 + u16 % 400, N = 1 + u16 % 100.
//! - even mode: the rest is a safetensors file holding `l.q_weight`, `l.q_invperm`, ...
//! - odd mode: a group table is built from the bytes (widths sorted descending, group sizes
//!   16/32/64/128, the last group taking the remaining rows), then optionally corrupted, and the
//!   tensors are filled from the rest of the input.
//!
//! A successful load must dequantize and multiply without panicking.

use paradec::quant::{Exl2Weight, QuantWeight};
use paradec::weights::save_safetensors;
use paradec::{HostData, Tensor};

use super::common::{self, fill, Bytes};

const WIDTHS: [u32; 6] = [8, 6, 5, 4, 3, 2];

/// One fuzz input through the code this target covers.
pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let mode = b.u8();
    let k = 1 + b.u16() as usize % 400;
    let n = 1 + b.u16() as usize % 100;
    let weights = if mode & 1 == 0 {
        match common::weights_from_bytes("exl2", b.rest()) {
            Ok(w) => w,
            Err(_) => return,
        }
    } else {
        let n_pad = n.div_ceil(32) * 32;
        let ng_wanted = 1 + b.u8() as usize % 8;
        let mut specs: Vec<(u32, usize)> = (0..ng_wanted)
            .map(|_| {
                let x = b.u8();
                (
                    WIDTHS[x as usize % 6],
                    [16, 32, 64, 128][(x >> 4) as usize & 3],
                )
            })
            .collect();
        specs.sort_by_key(|s| std::cmp::Reverse(s.0));
        let mut q_groups: Vec<i16> = Vec::new();
        let (mut rows_left, mut packed) = (k, 0usize);
        for (i, &(bits, gs)) in specs.iter().enumerate() {
            if rows_left == 0 {
                break;
            }
            let rows = if i + 1 == specs.len() {
                rows_left
            } else {
                gs.min(rows_left)
            };
            q_groups.push(bits as i16);
            q_groups.push(packed as i16);
            packed += (rows * bits as usize).div_ceil(32);
            rows_left -= rows;
        }
        let mut packed_rows = packed;
        let corrupt = b.u8();
        let amount = b.u8();
        match corrupt % 10 {
            1 => {
                let i = amount as usize % q_groups.len();
                q_groups[i] = q_groups[i].wrapping_add((amount as i16 >> 4) - 8);
            }
            2 => packed_rows = (packed_rows + (amount as usize % 3)).saturating_sub(1),
            3 => q_groups.push(amount as i16),
            _ => {}
        }
        let src = b.rest();
        let mut perm: Vec<i32> = (0..k as i32).collect();
        for i in (1..k).rev() {
            let j = src.get(i % src.len().max(1)).copied().unwrap_or(0) as usize * 31 % (i + 1);
            perm.swap(i, j);
        }
        if corrupt % 10 == 4 {
            let i = amount as usize % k;
            perm[i] = perm[(i + 1) % k];
        }
        if corrupt % 10 == 5 {
            perm[amount as usize % k] = amount as i32 - 128;
        }
        let ng = q_groups.len() / 2;
        let q_weight = fill(src, packed_rows * n_pad, 4, |c| {
            i32::from_le_bytes([c[0], c[1], c[2], c[3]])
        });
        let q_scale = fill(src.get(5..).unwrap_or(&[]), ng * n_pad / 8, 4, |c| {
            i32::from_le_bytes([c[0], c[1], c[2], c[3]])
        });
        let raw_max = corrupt & 16 != 0;
        let q_scale_max = fill(src.get(2..).unwrap_or(&[]), ng, 2, |c| {
            let bits = u16::from_le_bytes([c[0], c[1]]);
            half::f16::from_bits(if raw_max { bits } else { bits & 0x3bff })
        });
        let scale_cols = if corrupt % 10 == 6 {
            n_pad / 8 + 1
        } else {
            n_pad / 8
        };
        let q_scale = if scale_cols != n_pad / 8 {
            vec![0; ng * scale_cols]
        } else {
            q_scale
        };
        let mut tensors: Vec<(String, Tensor)> = vec![
            (
                "l.q_weight".into(),
                Tensor::from_host(HostData::I32(q_weight), &[packed_rows, n_pad]).unwrap(),
            ),
            (
                "l.q_invperm".into(),
                Tensor::from_host(HostData::I32(perm.clone()), &[k]).unwrap(),
            ),
            (
                "l.q_scale".into(),
                Tensor::from_host(HostData::I32(q_scale), &[ng, scale_cols]).unwrap(),
            ),
            (
                "l.q_scale_max".into(),
                Tensor::from_host(HostData::F16(q_scale_max), &[ng]).unwrap(),
            ),
            (
                "l.q_groups".into(),
                Tensor::from_host(HostData::I16(q_groups.clone()), &[q_groups.len()]).unwrap(),
            ),
        ];
        if corrupt & 32 != 0 {
            let len = if corrupt & 64 != 0 { n_pad } else { n };
            tensors.push((
                "l.bias".into(),
                Tensor::from_f32(vec![0.5; len], &[len]).unwrap(),
            ));
        }
        if corrupt % 10 == 7 {
            // q_perm = argsort(q_invperm) (wrong when q_invperm was corrupted).
            let mut qp = vec![0i32; k];
            for (i, &j) in perm.iter().enumerate() {
                if let Some(s) = qp.get_mut(j as usize) {
                    *s = i as i32;
                }
            }
            tensors.push((
                "l.q_perm".into(),
                Tensor::from_host(HostData::I32(qp), &[k]).unwrap(),
            ));
        }
        if corrupt % 10 == 8 {
            tensors.remove(amount as usize % tensors.len());
        }
        let path = common::scratch_dir("exl2-s").join("model.safetensors");
        let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
        save_safetensors(&path, &refs, None).unwrap();
        paradec::Weights::from_files(&[path]).unwrap()
    };
    let loaded = Exl2Weight::load(&weights, "l", k, n);
    common::debug(&loaded);
    if let Ok(q) = loaded {
        let rows: usize = q.groups().iter().map(|g| g.rows).sum();
        assert_eq!(rows, k);
        for w in q.groups().windows(2) {
            assert!(w[0].bits >= w[1].bits && w[0].packed_row < w[1].packed_row);
        }
        common::exercise(&QuantWeight::Exl2(q));
    }
}

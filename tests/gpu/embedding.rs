//! The embedding gather against the CPU twin; bad ids.

use super::*;

fn ids_tensor(ids: &[i32]) -> Tensor {
    Tensor::from_host(paradec::HostData::I32(ids.to_vec()), &[ids.len()])
        .unwrap()
        .to_device(Device::Cuda(0))
        .unwrap()
}

#[test]
fn embedding_matches_cpu() {
    let Some(s) = gpu("embedding_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(41);
    let vocab = 1000;
    let hiddens: &[usize] = if small() {
        &[7, 64]
    } else {
        &[1, 7, 64, 1000, 4096]
    };
    let counts: &[usize] = if small() { &[5] } else { &[1, 5, 300] };
    for dtype in DTYPES {
        for &hidden in hiddens {
            for &n in counts {
                let (table, tv) =
                    upload(&rng.vec(vocab * hidden, -1.0, 1.0), &[vocab, hidden], dtype);
                let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab as u64) as u32).collect();
                kernels::check_ids(&ids, vocab).unwrap();
                let ids_d = ids_tensor(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>());
                let mut out = poisoned(&[n, hidden], dtype);
                kernels::embedding(&table, hidden, &ids_d, &mut out, &s).unwrap();
                stream_sync(&s);
                let mut want = vec![0f32; n * hidden];
                cpu::embedding::embedding(&tv, hidden, &ids, &mut want);
                // A gather copies values: exact.
                assert_eq!(
                    download(&out),
                    want,
                    "embedding {dtype} hidden={hidden} n={n}"
                );
            }
        }
    }
}

#[test]
fn embedding_bad_ids() {
    let Some(s) = gpu("embedding_bad_ids") else {
        return;
    };
    let (vocab, hidden) = (10, 16);
    let tv: Vec<f32> = (0..vocab * hidden).map(|i| 1.0 + i as f32).collect();
    let (table, _) = upload(&tv, &[vocab, hidden], DType::F16);
    // Device ids outside the vocabulary give zero rows, and no out-of-bounds read.
    let ids = ids_tensor(&[-1, vocab as i32, 5, i32::MAX]);
    let mut out = poisoned(&[4, hidden], DType::F16);
    kernels::embedding(&table, hidden, &ids, &mut out, &s).unwrap();
    stream_sync(&s);
    let got = download(&out);
    assert!(got[..2 * hidden].iter().all(|&v| v == 0.0));
    assert!(got[3 * hidden..].iter().all(|&v| v == 0.0));
    assert_eq!(got[2 * hidden], tv[5 * hidden]);
    // Host ids are checked, naming the bad one.
    let e = kernels::check_ids(&[1, 2, 10], vocab).unwrap_err();
    assert!(e.to_string().contains("token id 10 at position 2"), "{e}");

    use ffi::paradec_kstatus as k;
    let f16 = dtype_code(DType::F16);
    let i32t = ffi::paradec_id_type::PARADEC_IDS_I32 as i32;
    let (tp, ip, op) = (dptr(&table), dptr(&ids), dptr_mut(&mut out));
    // SAFETY: pointers are NULL or live buffers; rejected calls launch nothing.
    unsafe {
        assert_eq!(
            ffi::paradec_embedding(f16, tp, vocab, hidden, ptr::null(), i32t, 4, op, s.raw()),
            k::PARADEC_K_NULL_POINTER
        );
        assert_eq!(
            ffi::paradec_embedding(f16, tp, vocab, hidden, ip, 7, 4, op, s.raw()),
            k::PARADEC_K_BAD_ENUM
        );
        assert_eq!(
            ffi::paradec_embedding(f16, tp, 0, hidden, ip, i32t, 4, op, s.raw()),
            k::PARADEC_K_ZERO_DIM
        );
        assert_eq!(
            ffi::paradec_embedding(f16, tp, vocab, 1usize << 33, ip, i32t, 4, op, s.raw()),
            k::PARADEC_K_DIM_TOO_LARGE
        );
    }
    let ids64 = Tensor::from_host(paradec::HostData::I64(vec![1]), &[1])
        .unwrap()
        .to_device(Device::Cuda(0))
        .unwrap();
    let e = kernels::embedding(&table, hidden, &ids64, &mut out, &s).unwrap_err();
    assert!(e.to_string().contains("ids"), "{e}");
    stream_sync(&s);
}

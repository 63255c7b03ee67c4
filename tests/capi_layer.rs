//! The C ABI from Rust: a layer built with `paradec_layer_create` from a fixture's own tensors
//! (named below the layer, the config.json text as the architecture) computes what the loaded
//! model's layer computes, for every family; and the memory query's weight bytes match what a
//! dense model holds once loaded.

use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::ptr;

use paradec::capi::*;
use paradec::tensor::HostData;
use paradec::{ArchParams, Weights};

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("config.json").exists())
            .collect();
    v.sort();
    v
}

fn host_ptr(h: &HostData) -> *mut c_void {
    match h {
        HostData::F32(v) => v.as_ptr() as *mut c_void,
        HostData::F16(v) => v.as_ptr() as *mut c_void,
        HostData::BF16(v) => v.as_ptr() as *mut c_void,
        HostData::I32(v) => v.as_ptr() as *mut c_void,
        HostData::I64(v) => v.as_ptr() as *mut c_void,
        HostData::I16(v) => v.as_ptr() as *mut c_void,
        HostData::I8(v) => v.as_ptr() as *mut c_void,
        HostData::U8(v) => v.as_ptr() as *mut c_void,
    }
}

fn dtype(d: paradec::DType) -> paradec_dtype {
    use paradec::DType as D;
    let (code, bits) = match d {
        D::F32 => (PARADEC_DTYPE_FLOAT, 32),
        D::F16 => (PARADEC_DTYPE_FLOAT, 16),
        D::BF16 => (PARADEC_DTYPE_BFLOAT, 16),
        D::I8 => (PARADEC_DTYPE_INT, 8),
        D::I16 => (PARADEC_DTYPE_INT, 16),
        D::I32 => (PARADEC_DTYPE_INT, 32),
        D::I64 => (PARADEC_DTYPE_INT, 64),
        D::U8 => (PARADEC_DTYPE_UINT, 8),
    };
    paradec_dtype {
        code,
        bits,
        lanes: 1,
    }
}

const CPU: paradec_device = paradec_device {
    device_type: PARADEC_DEVICE_CPU,
    device_id: 0,
};

fn tensor(data: *mut c_void, dt: paradec_dtype, shape: &mut [i64]) -> paradec_tensor {
    paradec_tensor {
        data,
        device: CPU,
        ndim: shape.len() as i32,
        dtype: dt,
        shape: shape.as_mut_ptr(),
        strides: ptr::null_mut(),
        byte_offset: 0,
    }
}

#[test]
fn layer_from_caller_tensors_equals_the_models_layer() {
    let dirs = fixtures();
    assert!(dirs.len() >= 10, "{dirs:?}");
    for dir in dirs {
        let arch = ArchParams::from_dir(&dir).unwrap();
        let weights = Weights::from_dir(&dir).unwrap();
        let layer = arch.num_layers - 1;
        let prefix = format!("{}.{layer}.", arch.names.layer_prefix);
        // The layer's tensors, named below the layer.
        let held: Vec<(CString, paradec::Tensor)> = weights
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix(&prefix).map(|rel| (rel.to_string(), n)))
            .map(|(rel, n)| (CString::new(rel).unwrap(), weights.get(n).unwrap()))
            .collect();
        let mut shapes: Vec<Vec<i64>> = held
            .iter()
            .map(|(_, t)| t.shape().iter().map(|&d| d as i64).collect())
            .collect();
        let descs: Vec<paradec_tensor> = held
            .iter()
            .zip(shapes.iter_mut())
            .map(|((_, t), s)| tensor(host_ptr(t.host().unwrap()), dtype(t.dtype()), s))
            .collect();
        let named: Vec<paradec_named_tensor> = held
            .iter()
            .zip(&descs)
            .map(|((n, _), d)| paradec_named_tensor {
                name: n.as_ptr(),
                tensor: d,
            })
            .collect();
        let cfg = CString::new(std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        let mut built = ptr::null_mut();
        assert_eq!(
            paradec_layer_create(cfg.as_ptr(), layer, named.as_ptr(), named.len(), &mut built),
            paradec_status::PARADEC_OK,
            "{}",
            dir.display()
        );
        let cdir = CString::new(dir.to_str().unwrap()).unwrap();
        let mut model = ptr::null_mut();
        assert_eq!(
            paradec_model_load(cdir.as_ptr(), ptr::null(), &mut model),
            paradec_status::PARADEC_OK
        );
        let mut taken = ptr::null_mut();
        assert_eq!(
            paradec_model_layer(model, layer, &mut taken),
            paradec_status::PARADEC_OK
        );
        let mut ws = ptr::null_mut();
        let f32t = dtype(paradec::DType::F32);
        assert_eq!(
            paradec_workspace_create(CPU, f32t, &mut ws),
            paradec_status::PARADEC_OK
        );
        let (b, q) = (2, 3);
        let n = b * q * arch.hidden;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let (mut y1, mut y2) = (x.clone(), x.clone());
        let mut hs = [b as i64, q as i64, arch.hidden as i64];
        let params = paradec_attn_params {
            struct_size: std::mem::size_of::<paradec_attn_params>(),
            batch: b,
            q_len: q,
            past_len: ptr::null(),
            attention_mask: ptr::null(),
            mask_slots: 0,
            position_offset: ptr::null(),
        };
        for (l, y) in [(built, &mut y1), (taken, &mut y2)] {
            let t = tensor(y.as_mut_ptr().cast(), f32t, &mut hs);
            assert_eq!(
                paradec_layer_forward(
                    l,
                    ptr::null_mut(),
                    ws,
                    &t,
                    &params,
                    ptr::null_mut(),
                    ptr::null(),
                    0
                ),
                paradec_status::PARADEC_OK
            );
        }
        assert_eq!(
            y1,
            y2,
            "{}: built layer differs from the model's",
            dir.display()
        );
        assert_ne!(y1, x);
        let (mut n1, mut n2) = (0usize, 0usize);
        assert_eq!(
            paradec_layer_numel(built, &mut n1),
            paradec_status::PARADEC_OK
        );
        assert_eq!(
            paradec_layer_numel(taken, &mut n2),
            paradec_status::PARADEC_OK
        );
        assert_eq!(n1, n2);

        // The memory query before loading: the checkpoint's bytes, all of them kept (dense f32).
        let mut mem = paradec_memory {
            struct_size: std::mem::size_of::<paradec_memory>(),
            ..Default::default()
        };
        assert_eq!(
            paradec_model_memory(cdir.as_ptr(), ptr::null(), 1, 16, f32t, &mut mem),
            paradec_status::PARADEC_OK
        );
        let mut info = paradec_model_info {
            struct_size: std::mem::size_of::<paradec_model_info>(),
            ..Default::default()
        };
        assert_eq!(
            paradec_model_describe(model, &mut info),
            paradec_status::PARADEC_OK
        );
        assert_eq!(mem.weight_bytes, info.weight_bytes, "{}", dir.display());
        assert_eq!(
            mem.cache_bytes,
            2 * arch.num_layers * 16 * arch.kv_heads * arch.head_dim * 4
        );
        paradec_layer_free(built);
        paradec_layer_free(taken);
        paradec_model_free(model);
        paradec_workspace_free(ws);
    }
}

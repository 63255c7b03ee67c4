//! GPU tests: every CUDA kernel against its CPU twin on fresh seeded random inputs (never
//! zeros), outputs poisoned with NaN before the run, relative error ‖out − ref‖/‖ref‖ within a
//! budget per dtype (the CPU reference sees the same rounded inputs); the launchers' argument
//! checks; the runtime wrappers.
//!
//! Without a device each test prints why it skipped — unless `PARADEC_REQUIRE_GPU=1`, where no
//! device is a failure. `PARADEC_GPU_SMALL=1` runs a small set of shapes that still covers every
//! code path (for compute-sanitizer).
#![cfg(feature = "cuda")]

use std::ffi::c_void;
use std::ptr;

use paradec::cpu;
use paradec::cpu::norm::NormKind;
use paradec::cuda::kernels::{self, NormAffine};
use paradec::cuda::{self, ffi, CudaEvent, CudaGraph, CudaStream, DeviceBuffer};
use paradec::tensor::Storage;
use paradec::{DType, Device, Error, Tensor};

// ---- harness -----------------------------------------------------------------------------------

fn require_gpu() -> bool {
    std::env::var("PARADEC_REQUIRE_GPU").as_deref() == Ok("1")
}

fn small() -> bool {
    std::env::var("PARADEC_GPU_SMALL").as_deref() == Ok("1")
}

/// A stream on device 0, or None (printing why) where there is no device.
fn gpu(test: &str) -> Option<CudaStream> {
    match cuda::device_count() {
        Ok(_) => Some(CudaStream::new(0).expect("creating a stream")),
        Err(e) => {
            assert!(
                !require_gpu(),
                "{test}: PARADEC_REQUIRE_GPU=1 but no CUDA device: {e}"
            );
            eprintln!("{test}: skipped: no CUDA device ({e})");
            None
        }
    }
}

/// splitmix64: a small seeded generator.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A device tensor of `dtype` from f32 values, and the values as the device sees them (rounded).
fn upload(vals: &[f32], shape: &[usize], dtype: DType) -> (Tensor, Vec<f32>) {
    let host = Tensor::from_f32_as(vals, shape, dtype).unwrap();
    let rounded = host.f32_values().unwrap().into_owned();
    (host.to_device(Device::Cuda(0)).unwrap(), rounded)
}

fn upload_raw(t: Tensor) -> Tensor {
    t.to_device(Device::Cuda(0)).unwrap()
}

/// A device tensor whose bytes are all 0xFF (NaN for f16, bf16 and f32).
fn poisoned(shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let mut b = DeviceBuffer::alloc(0, n * dtype.size()).unwrap();
    b.memset(0xFF).unwrap();
    Tensor::from_device_buffer(b, dtype, shape).unwrap()
}

fn download(t: &Tensor) -> Vec<f32> {
    t.to_host().unwrap().f32_values().unwrap().into_owned()
}

/// ‖out − ref‖ / ‖ref‖ (NaN if any output is NaN).
fn rel_err(out: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(out.len(), reference.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (&o, &r) in out.iter().zip(reference) {
        let d = o as f64 - r as f64;
        num += d * d;
        den += r as f64 * r as f64;
    }
    if den == 0.0 {
        return if num == 0.0 { 0.0 } else { f64::INFINITY };
    }
    (num / den).sqrt()
}

fn budget(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 2e-3,
        DType::BF16 => 1.2e-2,
        _ => 1e-5,
    }
}

#[track_caller]
fn assert_close(what: &str, dtype: DType, out: &[f32], reference: &[f32]) {
    let e = rel_err(out, reference);
    assert!(
        e <= budget(dtype),
        "{what} ({dtype}): relative error {e:e} over budget {:e}",
        budget(dtype)
    );
}

fn stream_sync(s: &CudaStream) {
    s.synchronize().unwrap();
}

const DTYPES: [DType; 2] = [DType::F16, DType::BF16];

// ---- runtime -----------------------------------------------------------------------------------

#[test]
fn no_device_gives_no_device_error() {
    if cuda::is_available() {
        return;
    }
    assert!(
        !require_gpu(),
        "PARADEC_REQUIRE_GPU=1 but no CUDA device: {:?}",
        cuda::device_count()
    );
    assert!(
        matches!(cuda::device_count(), Err(Error::NoDevice(_))),
        "{:?}",
        cuda::device_count()
    );
    let t = Tensor::from_f32(vec![1.0, 2.0], &[2]).unwrap();
    let e = t.to_device(Device::Cuda(0)).unwrap_err();
    assert!(matches!(e, Error::NoDevice(_)), "{e:?}");
    assert!(matches!(CudaStream::new(0), Err(Error::NoDevice(_))));
    eprintln!("no CUDA device here: every entry point answered NoDevice ({e})");
}

#[test]
fn device_properties_streams_events() {
    let Some(s) = gpu("device_properties_streams_events") else {
        return;
    };
    let p = cuda::properties(0).unwrap();
    eprintln!(
        "device 0: {} sm_{}{} {} SMs, {:.1} GiB, L2 {} MiB; driver {} runtime {}",
        p.name,
        p.compute_capability.0,
        p.compute_capability.1,
        p.multiprocessors,
        p.total_memory as f64 / (1u64 << 30) as f64,
        p.l2_cache_bytes >> 20,
        cuda::device::driver_version().unwrap(),
        cuda::device::runtime_version().unwrap()
    );
    assert!(!p.name.is_empty() && p.multiprocessors > 0 && p.total_memory > 0);
    assert!(p.compute_capability.0 >= 8);
    let (free, total) = cuda::device::mem_info(0).unwrap();
    assert!(free > 0 && free <= total);
    assert!(cuda::properties(9999).is_err());
    assert!(CudaStream::new(9999).is_err());

    // Events time queued work.
    let mut b = DeviceBuffer::alloc(0, 64 << 20).unwrap();
    let (e0, e1) = (CudaEvent::new(0).unwrap(), CudaEvent::new(0).unwrap());
    e0.record(&s).unwrap();
    for i in 0..4 {
        b.memset_async(i as u8, &s).unwrap();
    }
    e1.record(&s).unwrap();
    e1.synchronize().unwrap();
    let ms = e0.elapsed_ms(&e1).unwrap();
    assert!(ms > 0.0 && ms < 1000.0, "{ms}");

    // A borrowed stream is not destroyed with its wrapper.
    {
        // SAFETY: `s` outlives the borrowed wrapper.
        let borrowed = unsafe { CudaStream::from_raw(s.raw(), 0) };
        assert!(!borrowed.is_owned());
    }
    s.synchronize().unwrap();
    CudaStream::legacy_default(0).synchronize().unwrap();
}

#[test]
fn buffers_and_tensors_round_trip() {
    let Some(s) = gpu("buffers_and_tensors_round_trip") else {
        return;
    };
    let mut rng = Rng::new(1);
    // Every dtype through Tensor::to_device and back.
    for dt in [
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::I32,
        DType::I64,
    ] {
        let bytes: Vec<u8> = (0..dt.size() * 37).map(|_| rng.below(256) as u8).collect();
        let h = Tensor::from_host(paradec::HostData::from_le_bytes(dt, &bytes).unwrap(), &[37])
            .unwrap();
        let d = h.to_device(Device::Cuda(0)).unwrap();
        assert_eq!(d.device(), Device::Cuda(0));
        assert_eq!(d.shape(), &[37]);
        let d2 = d.try_clone().unwrap();
        let back = d2.to_device(Device::Cpu).unwrap();
        assert_eq!(back.host().unwrap().to_le_bytes(), bytes, "{dt}");
    }
    // Zero-length buffers need no allocation.
    let z = DeviceBuffer::alloc(0, 0).unwrap();
    assert!(z.is_empty() && z.to_host_bytes().unwrap().is_empty());
    let e = Tensor::from_f32(vec![], &[0, 4]).unwrap();
    assert_eq!(
        e.to_device(Device::Cuda(0))
            .unwrap()
            .to_host()
            .unwrap()
            .numel(),
        0
    );

    // memset, async copies, device-to-device copies.
    let n = 1 << 20;
    let src: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
    let mut a = DeviceBuffer::alloc(0, n).unwrap();
    a.memset(0xAB).unwrap();
    assert!(a.to_host_bytes().unwrap().iter().all(|&x| x == 0xAB));
    // SAFETY: `src` and `back` outlive the stream synchronization below and are not touched
    // in between.
    let mut back = vec![0u8; n];
    unsafe { a.copy_from_host_async(&src, &s).unwrap() };
    let mut c = DeviceBuffer::alloc(0, n).unwrap();
    c.copy_from_device_async(&a, &s).unwrap();
    unsafe { c.copy_to_host_async(&mut back, &s).unwrap() };
    s.synchronize().unwrap();
    assert_eq!(back, src);
    assert!(a.copy_from_host(&src[1..]).is_err());
    let mut d = c.copy_to(0).unwrap();
    d.memset_async(7, &s).unwrap();
    assert!(d.to_host_bytes().unwrap().iter().all(|&x| x == 7));
    assert_eq!(c.to_host_bytes().unwrap(), src);
    assert!(Tensor::from_device_buffer(c, DType::F16, &[3]).is_err());
}

// ---- norms -------------------------------------------------------------------------------------

fn norm_cols() -> Vec<usize> {
    if small() {
        // scalar path (7, 4095), vec 1 (64), vec 2 (512), vec 4 / one warp (1000),
        // vec 4 / 128 threads (4096), vec 4 / 1024 threads (32768)
        vec![7, 64, 512, 1000, 4095, 4096, 32768]
    } else {
        vec![1, 7, 33, 64, 257, 512, 1000, 2048, 4095, 4096, 8192, 32768]
    }
}

fn norm_rows(cols: usize) -> Vec<usize> {
    if small() {
        vec![3]
    } else if cols >= 8192 {
        vec![1, 2 * 17]
    } else {
        vec![1, 2 * 17, 4 * 33]
    }
}

/// (has weight, has bias) combinations.
const AFFINES: [(bool, bool); 4] = [(true, true), (true, false), (false, false), (false, true)];

struct NormCase {
    kind: NormKind,
    dtype: DType,
    rows: usize,
    cols: usize,
    weight: bool,
    bias: bool,
}

impl std::fmt::Display for NormCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} {} {}x{} weight={} bias={}",
            self.kind, self.dtype, self.rows, self.cols, self.weight, self.bias
        )
    }
}

fn norm_cases() -> Vec<NormCase> {
    let mut v = Vec::new();
    for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
        for dtype in DTYPES {
            for cols in norm_cols() {
                for rows in norm_rows(cols) {
                    for (i, &(weight, bias)) in AFFINES.iter().enumerate() {
                        // Every affine combination at small sizes; weight+bias and none above.
                        if cols > 1000 && i % 2 == 1 {
                            continue;
                        }
                        v.push(NormCase {
                            kind,
                            dtype,
                            rows,
                            cols,
                            weight,
                            bias,
                        });
                    }
                }
            }
        }
    }
    v
}

/// An affine pair on the device plus the rounded values for the CPU.
struct Affine {
    w: Option<(Tensor, Vec<f32>)>,
    b: Option<(Tensor, Vec<f32>)>,
}

impl Affine {
    fn new(rng: &mut Rng, c: &NormCase) -> Self {
        let w = c
            .weight
            .then(|| upload(&rng.vec(c.cols, 0.5, 1.5), &[c.cols], c.dtype));
        let b = c
            .bias
            .then(|| upload(&rng.vec(c.cols, -0.5, 0.5), &[c.cols], c.dtype));
        Affine { w, b }
    }
    fn dev(&self) -> NormAffine<'_> {
        NormAffine {
            weight: self.w.as_ref().map(|x| &x.0),
            bias: self.b.as_ref().map(|x| &x.0),
        }
    }
    fn cpu(&self) -> cpu::norm::NormAffine<'_> {
        cpu::norm::NormAffine {
            weight: self.w.as_ref().map(|x| x.1.as_slice()),
            bias: self.b.as_ref().map(|x| x.1.as_slice()),
        }
    }
}

/// Row values with an offset, so that LayerNorm's mean subtraction matters.
fn norm_input(rng: &mut Rng, n: usize) -> Vec<f32> {
    let offset = rng.uniform(-1.0, 1.0);
    rng.vec(n, -2.0, 2.0).iter().map(|v| v + offset).collect()
}

#[test]
fn norm_matches_cpu() {
    let Some(s) = gpu("norm_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(11);
    let cases = norm_cases();
    for c in &cases {
        let n = c.rows * c.cols;
        let shape = [c.rows, c.cols];
        let (x, xv) = upload(&norm_input(&mut rng, n), &shape, c.dtype);
        let aff = Affine::new(&mut rng, c);
        let mut out = poisoned(&shape, c.dtype);
        let eps = 1e-5;
        kernels::norm(c.kind, &x, c.rows, c.cols, aff.dev(), eps, &mut out, &s).unwrap();
        stream_sync(&s);
        let mut want = vec![0f32; n];
        cpu::norm::norm(c.kind, &xv, c.rows, c.cols, aff.cpu(), eps, &mut want);
        assert_close(&format!("norm {c}"), c.dtype, &download(&out), &want);
        assert_eq!(download(&x), xv, "norm {c}: x changed");
    }
    eprintln!("norm_matches_cpu: {} cases", cases.len());
}

#[test]
fn add_norm_matches_cpu() {
    let Some(s) = gpu("add_norm_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(12);
    let cases = norm_cases();
    for c in &cases {
        let n = c.rows * c.cols;
        let shape = [c.rows, c.cols];
        let (mut x, xv) = upload(&norm_input(&mut rng, n), &shape, c.dtype);
        let (r, rv) = upload(&rng.vec(n, -1.0, 1.0), &shape, c.dtype);
        let aff = Affine::new(&mut rng, c);
        let mut out = poisoned(&shape, c.dtype);
        let eps = 1e-6;
        kernels::add_norm(
            c.kind,
            &mut x,
            &r,
            c.rows,
            c.cols,
            aff.dev(),
            eps,
            &mut out,
            &s,
        )
        .unwrap();
        stream_sync(&s);
        let mut want_x = xv.clone();
        let mut want = vec![0f32; n];
        cpu::norm::add_norm(
            c.kind,
            &mut want_x,
            &rv,
            c.rows,
            c.cols,
            aff.cpu(),
            eps,
            &mut want,
        );
        assert_close(
            &format!("add_norm out {c}"),
            c.dtype,
            &download(&out),
            &want,
        );
        assert_close(&format!("add_norm x {c}"), c.dtype, &download(&x), &want_x);
    }
    eprintln!("add_norm_matches_cpu: {} cases", cases.len());
}

#[test]
fn norm2_matches_cpu() {
    let Some(s) = gpu("norm2_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(13);
    let cases = norm_cases();
    for (i, c) in cases.iter().enumerate() {
        let n = c.rows * c.cols;
        let shape = [c.rows, c.cols];
        let (mut x, xv) = upload(&norm_input(&mut rng, n), &shape, c.dtype);
        let aff_a = Affine::new(&mut rng, c);
        // The second norm's affine differs in which parts it has.
        let c_b = NormCase {
            weight: !c.bias,
            bias: c.weight,
            ..*c
        };
        let aff_b = Affine::new(&mut rng, &c_b);
        let mut out_a = poisoned(&shape, c.dtype);
        let mut out_b = poisoned(&shape, c.dtype);
        let eps = 1e-5;
        // Every other case also fuses a residual add (add_norm2).
        let with_residual = i % 2 == 1;
        let mut xv_used = xv.clone();
        if with_residual {
            let (r, rv) = upload(&rng.vec(n, -1.0, 1.0), &shape, c.dtype);
            kernels::add_norm2(
                c.kind,
                &mut x,
                &r,
                c.rows,
                c.cols,
                aff_a.dev(),
                aff_b.dev(),
                eps,
                &mut out_a,
                &mut out_b,
                &s,
            )
            .unwrap();
            cpu::activation::add_inplace(&mut xv_used, &rv);
        } else {
            kernels::norm2(
                c.kind,
                &x,
                c.rows,
                c.cols,
                aff_a.dev(),
                aff_b.dev(),
                eps,
                &mut out_a,
                &mut out_b,
                &s,
            )
            .unwrap();
        }
        stream_sync(&s);
        let mut want_a = vec![0f32; n];
        let mut want_b = vec![0f32; n];
        cpu::norm::norm2(
            c.kind,
            &xv_used,
            c.rows,
            c.cols,
            aff_a.cpu(),
            aff_b.cpu(),
            eps,
            &mut want_a,
            &mut want_b,
        );
        let tag = format!("norm2 {c} residual={with_residual}");
        assert_close(&format!("{tag} out_a"), c.dtype, &download(&out_a), &want_a);
        assert_close(&format!("{tag} out_b"), c.dtype, &download(&out_b), &want_b);
        assert_close(&format!("{tag} x"), c.dtype, &download(&x), &xv_used);
    }
    eprintln!("norm2_matches_cpu: {} cases", cases.len());
}

fn dptr(t: &Tensor) -> *const c_void {
    match t.storage() {
        Storage::Cuda(b) => b.as_ptr(),
        Storage::Host(_) => panic!("host tensor"),
    }
}

fn dptr_mut(t: &mut Tensor) -> *mut c_void {
    match t.storage_mut() {
        Storage::Cuda(b) => b.as_mut_ptr(),
        Storage::Host(_) => panic!("host tensor"),
    }
}

/// Misaligned pointers take the scalar path; the output may alias x (in place).
#[test]
fn norm_misaligned_and_in_place() {
    let Some(s) = gpu("norm_misaligned_and_in_place") else {
        return;
    };
    let mut rng = Rng::new(14);
    let (rows, cols) = (5, 1024);
    let n = rows * cols;
    for dtype in DTYPES {
        // x starts one element into its buffer: 2-byte aligned, not 16.
        let (xbuf, xv_all) = upload(&norm_input(&mut rng, n + 1), &[n + 1], dtype);
        let xv = &xv_all[1..];
        let (w, wv) = upload(&rng.vec(cols, 0.5, 1.5), &[cols], dtype);
        let mut out = poisoned(&[n + 1], dtype);
        let code = if dtype == DType::F16 {
            ffi::paradec_dtype::PARADEC_F16
        } else {
            ffi::paradec_dtype::PARADEC_BF16
        } as i32;
        // SAFETY: pointers into live device buffers with n (+1) elements; offsets stay inside.
        let st = unsafe {
            ffi::paradec_norm(
                ffi::paradec_norm_kind::PARADEC_LAYER_NORM as i32,
                code,
                (dptr(&xbuf) as *const u16).add(1).cast(),
                dptr(&w),
                ptr::null(),
                (dptr_mut(&mut out) as *mut u16).add(1).cast(),
                rows,
                cols,
                1e-5,
                s.raw(),
            )
        };
        assert_eq!(st, 0, "{}", cuda::error::kstatus_str(st));
        stream_sync(&s);
        let aff = cpu::norm::NormAffine {
            weight: Some(&wv),
            bias: None,
        };
        let mut want = vec![0f32; n];
        cpu::norm::norm(NormKind::LayerNorm, xv, rows, cols, aff, 1e-5, &mut want);
        assert_close("misaligned norm", dtype, &download(&out)[1..], &want);

        // In place: out == x (aligned, vector path).
        let (mut x, xv) = upload(&norm_input(&mut rng, n), &[rows, cols], dtype);
        let xp = dptr_mut(&mut x);
        // SAFETY: x is a live device buffer of n elements; in-place is allowed.
        let st = unsafe {
            ffi::paradec_norm(
                ffi::paradec_norm_kind::PARADEC_RMS_NORM as i32,
                code,
                xp,
                dptr(&w),
                ptr::null(),
                xp,
                rows,
                cols,
                1e-5,
                s.raw(),
            )
        };
        assert_eq!(st, 0);
        stream_sync(&s);
        let mut want = vec![0f32; n];
        cpu::norm::norm(NormKind::RmsNorm, &xv, rows, cols, aff, 1e-5, &mut want);
        assert_close("in-place norm", dtype, &download(&x), &want);
    }
}

#[test]
fn norm_rejects_bad_arguments() {
    let Some(s) = gpu("norm_rejects_bad_arguments") else {
        return;
    };
    use ffi::paradec_kstatus as k;
    let (rows, cols) = (4, 64);
    let x = upload(&[0.5; 256], &[rows, cols], DType::F16).0;
    let mut out = poisoned(&[rows, cols], DType::F16);
    let f16 = ffi::paradec_dtype::PARADEC_F16 as i32;
    let ln = ffi::paradec_norm_kind::PARADEC_LAYER_NORM as i32;
    let (xp, op) = (dptr(&x), dptr_mut(&mut out));
    let call = |kind: i32, dtype: i32, x: *const c_void, out: *mut c_void, r: usize, c: usize| {
        // SAFETY: every pointer is NULL or a live device buffer large enough for the sizes the
        // launcher accepts; rejected calls launch nothing.
        unsafe {
            ffi::paradec_norm(
                kind,
                dtype,
                x,
                ptr::null(),
                ptr::null(),
                out,
                r,
                c,
                1e-5,
                s.raw(),
            )
        }
    };
    assert_eq!(call(ln, f16, xp, op, rows, cols), k::PARADEC_K_OK);
    assert_eq!(
        call(ln, f16, ptr::null(), op, rows, cols),
        k::PARADEC_K_NULL_POINTER
    );
    assert_eq!(
        call(ln, f16, xp, ptr::null_mut(), rows, cols),
        k::PARADEC_K_NULL_POINTER
    );
    assert_eq!(call(7, f16, xp, op, rows, cols), k::PARADEC_K_BAD_ENUM);
    assert_eq!(call(ln, 9, xp, op, rows, cols), k::PARADEC_K_BAD_DTYPE);
    assert_eq!(call(ln, f16, xp, op, 0, cols), k::PARADEC_K_ZERO_DIM);
    assert_eq!(call(ln, f16, xp, op, rows, 0), k::PARADEC_K_ZERO_DIM);
    assert_eq!(call(ln, f16, xp, op, 1, 32769), k::PARADEC_K_DIM_TOO_LARGE);
    assert_eq!(
        call(ln, f16, xp, op, 1usize << 40, 1),
        k::PARADEC_K_DIM_TOO_LARGE
    );
    // SAFETY: rejected before any pointer is used.
    unsafe {
        assert_eq!(
            ffi::paradec_add_norm(
                ln,
                f16,
                op,
                ptr::null(),
                ptr::null(),
                ptr::null(),
                op,
                rows,
                cols,
                1e-5,
                s.raw()
            ),
            k::PARADEC_K_NULL_POINTER
        );
        assert_eq!(
            ffi::paradec_norm2(
                ln,
                f16,
                xp,
                ptr::null(),
                ptr::null(),
                ptr::null(),
                ptr::null(),
                op,
                ptr::null_mut(),
                rows,
                cols,
                1e-5,
                s.raw()
            ),
            k::PARADEC_K_NULL_POINTER
        );
    }
    assert!(cuda::error::kstatus_str(k::PARADEC_K_DIM_TOO_LARGE).contains("limit"));

    // The safe layer: dtypes, element counts, devices.
    let kind = NormKind::LayerNorm;
    let none = NormAffine::NONE;
    let e = kernels::norm(kind, &x, rows, cols + 1, none, 1e-5, &mut out, &s).unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e:?}");
    let x32 = upload(&[0.5; 256], &[rows, cols], DType::F32).0;
    let mut o32 = poisoned(&[rows, cols], DType::F32);
    let e = kernels::norm(kind, &x32, rows, cols, none, 1e-5, &mut o32, &s).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    let mut obf = poisoned(&[rows, cols], DType::BF16);
    let e = kernels::norm(kind, &x, rows, cols, none, 1e-5, &mut obf, &s).unwrap_err();
    assert!(e.to_string().contains("dtype"), "{e}");
    let xh = Tensor::from_f32_as(&[0.5; 256], &[rows, cols], DType::F16).unwrap();
    let e = kernels::norm(kind, &xh, rows, cols, none, 1e-5, &mut out, &s).unwrap_err();
    assert!(e.to_string().contains("cpu"), "{e}");
    let w_bad = upload(&[1.0; 63], &[63], DType::F16).0;
    let aff = NormAffine {
        weight: Some(&w_bad),
        bias: None,
    };
    let e = kernels::norm(kind, &x, rows, cols, aff, 1e-5, &mut out, &s).unwrap_err();
    assert!(e.to_string().contains("weight"), "{e}");
    let e = kernels::norm(kind, &x, 1, 40000, none, 1e-5, &mut out, &s).unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e:?}");
    stream_sync(&s);
}

/// A captured graph replays the same kernels.
#[test]
fn graph_capture_replays_kernels() {
    let Some(s) = gpu("graph_capture_replays_kernels") else {
        return;
    };
    let mut rng = Rng::new(15);
    let (rows, cols) = (8, 4096);
    let (x, xv) = upload(
        &norm_input(&mut rng, rows * cols),
        &[rows, cols],
        DType::F16,
    );
    let mut out = poisoned(&[rows, cols], DType::F16);
    let g = CudaGraph::capture(&s, |st| {
        kernels::norm(
            NormKind::RmsNorm,
            &x,
            rows,
            cols,
            NormAffine::NONE,
            1e-5,
            &mut out,
            st,
        )
    })
    .unwrap();
    // Nothing ran during capture.
    assert!(download(&out).iter().all(|v| v.is_nan()));
    for _ in 0..3 {
        g.launch(&s).unwrap();
    }
    stream_sync(&s);
    let mut want = vec![0f32; rows * cols];
    cpu::norm::norm(
        NormKind::RmsNorm,
        &xv,
        rows,
        cols,
        cpu::norm::NormAffine {
            weight: None,
            bias: None,
        },
        1e-5,
        &mut want,
    );
    assert_close("graph replay", DType::F16, &download(&out), &want);
    let legacy = CudaStream::legacy_default(0);
    assert!(CudaGraph::capture(&legacy, |_| Ok(())).is_err());
    let _ = upload_raw;
}

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
use std::sync::{RwLock, RwLockReadGuard};

use paradec::cpu;
use paradec::cuda::kernels::{self, CacheSlots, RotaryArgs};
use paradec::cuda::{self, ffi, CudaEvent, CudaGraph, CudaStream, DeviceBuffer};
use paradec::tensor::Storage;
use paradec::vocab::Activation;
use paradec::vocab::Affine as DevAffine;
use paradec::vocab::NormKind;
use paradec::vocab::RopeStyle;
use paradec::{DType, Device, Error, Tensor};

// ---- harness -----------------------------------------------------------------------------------

fn require_gpu() -> bool {
    std::env::var("PARADEC_REQUIRE_GPU").as_deref() == Ok("1")
}

fn small() -> bool {
    std::env::var("PARADEC_GPU_SMALL").as_deref() == Ok("1")
}

/// Graph capture and device-wide synchronization (which the synchronous copies do) must not
/// overlap: capturing tests hold this exclusively, every other test shares it.
static CAPTURE: RwLock<()> = RwLock::new(());

/// A GPU test's context: its stream, and its share of the capture lock.
struct Gpu {
    stream: CudaStream,
    _shared: RwLockReadGuard<'static, ()>,
}

impl std::ops::Deref for Gpu {
    type Target = CudaStream;
    fn deref(&self) -> &CudaStream {
        &self.stream
    }
}

/// A stream on device 0, or None (printing why) where there is no device.
fn gpu(test: &str) -> Option<Gpu> {
    let shared = CAPTURE.read().unwrap_or_else(|e| e.into_inner());
    gpu_stream(test).map(|stream| Gpu {
        stream,
        _shared: shared,
    })
}

fn gpu_stream(test: &str) -> Option<CudaStream> {
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

/// ‖out − ref‖ / max(‖ref‖, 0.01·√n) (NaN if any output is NaN). The floor — an rms of 0.01
/// per element, far below the O(1) values the tests use — keeps a handful of tiny outputs (say
/// GELU of −5, a subnormal in fp16) from turning rounding into a large relative error.
fn rel_err(out: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(out.len(), reference.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (&o, &r) in out.iter().zip(reference) {
        let d = o as f64 - r as f64;
        num += d * d;
        den += r as f64 * r as f64;
    }
    let floor = 1e-4 * out.len() as f64;
    (num / den.max(floor)).sqrt()
}

/// Like `assert_close`, but where the reference is NaN (memory the kernel must not write) the
/// output must be NaN too.
#[track_caller]
fn assert_close_masked(what: &str, dtype: DType, out: &[f32], reference: &[f32]) {
    let (mut o, mut r) = (Vec::new(), Vec::new());
    for (i, (&a, &b)) in out.iter().zip(reference).enumerate() {
        if b.is_nan() {
            assert!(
                a.is_nan(),
                "{what}: element {i} was written ({a}) but should not be"
            );
        } else {
            o.push(a);
            r.push(b);
        }
    }
    assert!(!r.is_empty(), "{what}: nothing to compare");
    assert_close(what, dtype, &o, &r);
}

fn dtype_code(dtype: DType) -> i32 {
    (if dtype == DType::F16 {
        ffi::paradec_dtype::PARADEC_F16
    } else {
        ffi::paradec_dtype::PARADEC_BF16
    }) as i32
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
    fn dev(&self) -> DevAffine<'_> {
        DevAffine {
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
    let none = DevAffine::NONE;
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
    let aff = DevAffine {
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
    let _exclusive = CAPTURE.write().unwrap_or_else(|e| e.into_inner());
    let Some(s) = gpu_stream("graph_capture_replays_kernels") else {
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
            DevAffine::NONE,
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
}

// ---- rotary + cache write ----------------------------------------------------------------------

struct RopeCase {
    style: Option<RopeStyle>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rot_dim: usize,
    batch: usize,
    q_len: usize,
    dtype: DType,
}

fn rope_cases() -> Vec<RopeCase> {
    // (heads, kv_heads, head_dim, rot_dim): MHA, GQA, MQA with partial rotary, Phi-like partial
    // (80/32), a tiny odd layout (scalar path), rot 24 (vector for interleaved, scalar for half),
    // head_dim 256.
    let heads_sets: &[(usize, usize, usize, usize)] = if small() {
        &[(4, 2, 64, 64), (6, 1, 64, 32), (2, 2, 6, 4), (4, 2, 96, 24)]
    } else {
        &[
            (4, 4, 64, 64),
            (8, 2, 128, 128),
            (6, 1, 64, 32),
            (4, 2, 80, 32),
            (2, 2, 6, 4),
            (4, 2, 96, 24),
            (3, 3, 256, 64),
        ]
    };
    let bq: &[(usize, usize)] = if small() {
        &[(2, 3)]
    } else {
        &[(1, 1), (3, 1), (2, 7), (1, 33)]
    };
    let mut v = Vec::new();
    for style in [Some(RopeStyle::Interleaved), Some(RopeStyle::Half), None] {
        for &(heads, kv_heads, head_dim, rot_dim) in heads_sets {
            for &(batch, q_len) in bq {
                for dtype in DTYPES {
                    v.push(RopeCase {
                        style,
                        heads,
                        kv_heads,
                        head_dim,
                        rot_dim,
                        batch,
                        q_len,
                        dtype,
                    });
                }
            }
        }
    }
    v
}

#[test]
fn rotary_cache_write_matches_cpu() {
    let Some(s) = gpu("rotary_cache_write_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(21);
    let cases = rope_cases();
    for c in &cases {
        let tokens = c.batch * c.q_len;
        let kv_dim = c.kv_heads * c.head_dim;
        let capacity = c.q_len + 4 + rng.below(5) as usize;
        let tag = format!(
            "rope {:?} {} b{}×{} h{}/{} d{} rot{}",
            c.style, c.dtype, c.batch, c.q_len, c.heads, c.kv_heads, c.head_dim, c.rot_dim
        );
        let (mut q, qv) = upload(
            &rng.vec(tokens * c.heads * c.head_dim, -2.0, 2.0),
            &[c.batch, c.q_len, c.heads, c.head_dim],
            c.dtype,
        );
        let kshape = [c.batch, c.q_len, c.kv_heads, c.head_dim];
        let (mut k, kv) = upload(&rng.vec(tokens * kv_dim, -2.0, 2.0), &kshape, c.dtype);
        let (v, vv) = upload(&rng.vec(tokens * kv_dim, -2.0, 2.0), &kshape, c.dtype);
        // Per-token positions (as with left padding they need not be past + t).
        let positions: Vec<i64> = (0..tokens).map(|_| rng.below(8192) as i64).collect();
        let past: Vec<usize> = (0..c.batch)
            .map(|_| rng.below((capacity - c.q_len + 1) as u64) as usize)
            .collect();
        let base = 10000f32;
        let inv_freq: Vec<f32> = (0..c.rot_dim / 2)
            .map(|j| 1.0 / base.powf(2.0 * j as f32 / c.rot_dim as f32))
            .collect();
        let attn_factor = if c.heads % 2 == 0 { 1.0 } else { 1.25 };
        let pos_d = Tensor::from_host(paradec::HostData::I64(positions.clone()), &[tokens])
            .unwrap()
            .to_device(Device::Cuda(0))
            .unwrap();
        let past_d = Tensor::from_host(
            paradec::HostData::I64(past.iter().map(|&p| p as i64).collect()),
            &[c.batch],
        )
        .unwrap()
        .to_device(Device::Cuda(0))
        .unwrap();
        let inv_d = Tensor::from_f32(inv_freq.clone(), &[inv_freq.len()])
            .unwrap()
            .to_device(Device::Cuda(0))
            .unwrap();
        let cshape = [c.batch, capacity, kv_dim];
        let mut ck = poisoned(&cshape, c.dtype);
        let mut cv = poisoned(&cshape, c.dtype);
        let rot_d = c.style.map(|style| RotaryArgs {
            style,
            rot_dim: c.rot_dim,
            inv_freq: &inv_d,
            attn_factor,
        });
        let slots_d = CacheSlots {
            batch: c.batch,
            q_len: c.q_len,
            capacity,
            past_len: &past_d,
        };
        kernels::rotary_and_cache_write(
            &mut q,
            &mut k,
            &v,
            c.heads,
            c.kv_heads,
            c.head_dim,
            &pos_d,
            rot_d.as_ref(),
            &slots_d,
            &mut ck,
            &mut cv,
            &s,
        )
        .unwrap();
        stream_sync(&s);

        let (mut q_ref, mut k_ref) = (qv.clone(), kv.clone());
        let cache_n = c.batch * capacity * kv_dim;
        let (mut ck_ref, mut cv_ref) = (vec![f32::NAN; cache_n], vec![f32::NAN; cache_n]);
        let rot_c = c.style.map(|style| paradec::vocab::RotaryArgs {
            style,
            rot_dim: c.rot_dim,
            inv_freq: &inv_freq,
            attn_factor,
        });
        let slots_c = paradec::vocab::CacheSlots {
            batch: c.batch,
            q_len: c.q_len,
            capacity,
            past_len: &past,
        };
        cpu::rope::rotary_and_cache_write(
            &mut q_ref,
            &mut k_ref,
            &vv,
            c.heads,
            c.kv_heads,
            c.head_dim,
            &positions,
            rot_c.as_ref(),
            &slots_c,
            &mut ck_ref,
            &mut cv_ref,
        );
        assert_close(&format!("{tag} q"), c.dtype, &download(&q), &q_ref);
        assert_close(&format!("{tag} k"), c.dtype, &download(&k), &k_ref);
        assert_close_masked(&format!("{tag} cache k"), c.dtype, &download(&ck), &ck_ref);
        assert_close_masked(&format!("{tag} cache v"), c.dtype, &download(&cv), &cv_ref);
        assert_eq!(download(&v), vv, "{tag}: v changed");
    }
    eprintln!("rotary_cache_write_matches_cpu: {} cases", cases.len());
}

#[test]
fn rotary_rejects_bad_arguments() {
    let Some(s) = gpu("rotary_rejects_bad_arguments") else {
        return;
    };
    use ffi::paradec_kstatus as k;
    let (b, t, h, kvh, d, cap) = (1usize, 2usize, 2usize, 1usize, 8usize, 4usize);
    let mut q = upload(&vec![0.5; b * t * h * d], &[b * t * h * d], DType::F16).0;
    let mut kk = upload(&vec![0.5; b * t * kvh * d], &[b * t * kvh * d], DType::F16).0;
    let v = upload(&vec![0.5; b * t * kvh * d], &[b * t * kvh * d], DType::F16).0;
    let mut ck = poisoned(&[b * cap * kvh * d], DType::F16);
    let mut cv = poisoned(&[b * cap * kvh * d], DType::F16);
    let pos = Tensor::from_host(paradec::HostData::I64(vec![0, 1]), &[2])
        .unwrap()
        .to_device(Device::Cuda(0))
        .unwrap();
    let past = Tensor::from_host(paradec::HostData::I64(vec![0]), &[1])
        .unwrap()
        .to_device(Device::Cuda(0))
        .unwrap();
    let inv = Tensor::from_f32(vec![1.0, 0.5, 0.25, 0.125], &[4])
        .unwrap()
        .to_device(Device::Cuda(0))
        .unwrap();
    let (qp, kp, vp) = (dptr_mut(&mut q), dptr_mut(&mut kk), dptr(&v));
    let (ckp, cvp) = (dptr_mut(&mut ck), dptr_mut(&mut cv));
    let (pp, lp, ip) = (
        dptr(&pos) as *const i64,
        dptr(&past) as *const i64,
        dptr(&inv) as *const f32,
    );
    let f16 = dtype_code(DType::F16);
    let half = ffi::paradec_rope_style::PARADEC_ROPE_HALF as i32;
    #[allow(clippy::too_many_arguments)]
    let call = |dtype: i32,
                q: *mut c_void,
                batch: usize,
                head_dim: usize,
                style: i32,
                rot: usize,
                ckp: *mut c_void,
                cvp: *mut c_void| {
        // SAFETY: pointers are NULL or live device buffers sized for the accepted shapes;
        // rejected calls launch nothing.
        unsafe {
            ffi::paradec_rotary_cache_write(
                dtype,
                q,
                kp,
                vp,
                batch,
                t,
                h,
                kvh,
                head_dim,
                pp,
                style,
                rot,
                ip,
                1.0,
                lp,
                cap,
                ckp,
                cvp,
                s.raw(),
            )
        }
    };
    assert_eq!(call(f16, qp, b, d, half, d, ckp, cvp), k::PARADEC_K_OK);
    assert_eq!(
        call(f16, ptr::null_mut(), b, d, half, d, ckp, cvp),
        k::PARADEC_K_NULL_POINTER
    );
    assert_eq!(
        call(f16, qp, b, d, half, d, ckp, ptr::null_mut()),
        k::PARADEC_K_NULL_POINTER
    );
    assert_eq!(call(f16, qp, b, d, 5, d, ckp, cvp), k::PARADEC_K_BAD_ENUM);
    assert_eq!(call(3, qp, b, d, half, d, ckp, cvp), k::PARADEC_K_BAD_DTYPE);
    assert_eq!(
        call(f16, qp, 0, d, half, d, ckp, cvp),
        k::PARADEC_K_ZERO_DIM
    );
    assert_eq!(
        call(f16, qp, b, d, half, 0, ckp, cvp),
        k::PARADEC_K_ZERO_DIM
    );
    assert_eq!(
        call(f16, qp, b, 2048, half, d, ckp, cvp),
        k::PARADEC_K_DIM_TOO_LARGE
    );
    assert_eq!(
        call(f16, qp, b, d, half, 5, ckp, cvp),
        k::PARADEC_K_BAD_SHAPE
    );
    assert_eq!(
        call(f16, qp, b, d, half, 10, ckp, cvp),
        k::PARADEC_K_BAD_SHAPE
    );

    // The safe layer.
    let slots = CacheSlots {
        batch: b,
        q_len: t,
        capacity: cap,
        past_len: &past,
    };
    let rot = RotaryArgs {
        style: RopeStyle::Half,
        rot_dim: 7,
        inv_freq: &inv,
        attn_factor: 1.0,
    };
    let e = kernels::rotary_and_cache_write(
        &mut q,
        &mut kk,
        &v,
        h,
        kvh,
        d,
        &pos,
        Some(&rot),
        &slots,
        &mut ck,
        &mut cv,
        &s,
    )
    .unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e:?}");
    let rot = RotaryArgs { rot_dim: 12, ..rot };
    let e = kernels::rotary_and_cache_write(
        &mut q,
        &mut kk,
        &v,
        h,
        kvh,
        d,
        &pos,
        Some(&rot),
        &slots,
        &mut ck,
        &mut cv,
        &s,
    )
    .unwrap_err();
    assert!(e.to_string().contains("inv_freq"), "{e}");
    let e = kernels::rotary_and_cache_write(
        &mut q,
        &mut kk,
        &v,
        h + 1,
        kvh,
        d,
        &pos,
        None,
        &slots,
        &mut ck,
        &mut cv,
        &s,
    )
    .unwrap_err();
    assert!(e.to_string().contains("rotary q"), "{e}");
    stream_sync(&s);
}

// ---- elementwise -------------------------------------------------------------------------------

const ACTS: [Activation; 5] = [
    Activation::GeluErf,
    Activation::GeluNew,
    Activation::GeluFast,
    Activation::Silu,
    Activation::Relu,
];

fn ew_sizes() -> Vec<usize> {
    if small() {
        vec![7, 4096 + 3]
    } else {
        vec![1, 7, 8, 1000, 4095, 65536 + 3, 1 << 20]
    }
}

#[test]
fn activations_match_cpu() {
    let Some(s) = gpu("activations_match_cpu") else {
        return;
    };
    let mut rng = Rng::new(31);
    let mut count = 0;
    for act in ACTS {
        for dtype in DTYPES {
            for n in ew_sizes() {
                let tag = format!("{act:?} {dtype} n={n}");
                // activate in place
                let (mut x, xv) = upload(&rng.vec(n, -6.0, 6.0), &[n], dtype);
                kernels::activate(act, &mut x, &s).unwrap();
                let mut want = xv.clone();
                cpu::activation::activate(act, &mut want);
                stream_sync(&s);
                assert_close(&format!("activate {tag}"), dtype, &download(&x), &want);
                // gated
                let (g, gv) = upload(&rng.vec(n, -6.0, 6.0), &[n], dtype);
                let (u, uv) = upload(&rng.vec(n, -2.0, 2.0), &[n], dtype);
                let mut out = poisoned(&[n], dtype);
                kernels::act_mul(act, &g, &u, &mut out, &s).unwrap();
                let mut want = vec![0f32; n];
                cpu::activation::act_mul(act, &gv, &uv, &mut want);
                stream_sync(&s);
                assert_close(&format!("act_mul {tag}"), dtype, &download(&out), &want);
                count += 2;
            }
        }
    }
    eprintln!("activations_match_cpu: {count} cases");
}

#[test]
fn add_inplace_matches_cpu() {
    let Some(s) = gpu("add_inplace_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(32);
    for dtype in DTYPES {
        for n in ew_sizes() {
            let (mut x, xv) = upload(&rng.vec(n, -2.0, 2.0), &[n], dtype);
            let (y, yv) = upload(&rng.vec(n, -2.0, 2.0), &[n], dtype);
            kernels::add_inplace(&mut x, &y, &s).unwrap();
            let mut want = xv.clone();
            cpu::activation::add_inplace(&mut want, &yv);
            stream_sync(&s);
            assert_close(&format!("add {dtype} n={n}"), dtype, &download(&x), &want);
        }
    }
}

/// Misaligned pointers take the scalar path everywhere.
#[test]
fn elementwise_misaligned() {
    let Some(s) = gpu("elementwise_misaligned") else {
        return;
    };
    let mut rng = Rng::new(33);
    let n = 1003;
    for dtype in DTYPES {
        let code = dtype_code(dtype);
        let (g, gv) = upload(&rng.vec(n + 1, -4.0, 4.0), &[n + 1], dtype);
        let (u, uv) = upload(&rng.vec(n + 1, -2.0, 2.0), &[n + 1], dtype);
        let mut out = poisoned(&[n + 1], dtype);
        // SAFETY: offsets of one element stay inside buffers of n + 1 elements.
        let st = unsafe {
            ffi::paradec_act_mul(
                ffi::paradec_activation::PARADEC_SILU as i32,
                code,
                (dptr(&g) as *const u16).add(1).cast(),
                (dptr(&u) as *const u16).add(1).cast(),
                (dptr_mut(&mut out) as *mut u16).add(1).cast(),
                n,
                s.raw(),
            )
        };
        assert_eq!(st, 0);
        stream_sync(&s);
        let mut want = vec![0f32; n];
        cpu::activation::act_mul(Activation::Silu, &gv[1..], &uv[1..], &mut want);
        let got = download(&out);
        assert!(got[0].is_nan(), "wrote before the output");
        assert_close("misaligned act_mul", dtype, &got[1..], &want);
    }
}

#[test]
fn elementwise_rejects_bad_arguments() {
    let Some(s) = gpu("elementwise_rejects_bad_arguments") else {
        return;
    };
    use ffi::paradec_kstatus as k;
    let mut x = upload(&[0.5; 16], &[16], DType::F16).0;
    let xp = dptr_mut(&mut x);
    let f16 = dtype_code(DType::F16);
    let silu = ffi::paradec_activation::PARADEC_SILU as i32;
    // SAFETY: pointers are NULL or a live buffer of 16 elements; rejected calls launch nothing.
    unsafe {
        assert_eq!(
            ffi::paradec_activate(silu, f16, xp, 16, s.raw()),
            k::PARADEC_K_OK
        );
        assert_eq!(
            ffi::paradec_activate(silu, f16, ptr::null_mut(), 16, s.raw()),
            k::PARADEC_K_NULL_POINTER
        );
        assert_eq!(
            ffi::paradec_activate(9, f16, xp, 16, s.raw()),
            k::PARADEC_K_BAD_ENUM
        );
        assert_eq!(
            ffi::paradec_activate(silu, 2, xp, 16, s.raw()),
            k::PARADEC_K_BAD_DTYPE
        );
        assert_eq!(
            ffi::paradec_activate(silu, f16, xp, 0, s.raw()),
            k::PARADEC_K_ZERO_DIM
        );
        assert_eq!(
            ffi::paradec_activate(silu, f16, xp, usize::MAX, s.raw()),
            k::PARADEC_K_DIM_TOO_LARGE
        );
        assert_eq!(
            ffi::paradec_act_mul(silu, f16, xp, ptr::null(), xp, 16, s.raw()),
            k::PARADEC_K_NULL_POINTER
        );
        assert_eq!(
            ffi::paradec_add_inplace(f16, xp, ptr::null(), 16, s.raw()),
            k::PARADEC_K_NULL_POINTER
        );
        assert_eq!(
            ffi::paradec_add_inplace(f16, xp, xp, 0, s.raw()),
            k::PARADEC_K_ZERO_DIM
        );
    }
    let y = upload(&[0.5; 15], &[15], DType::F16).0;
    let e = kernels::add_inplace(&mut x, &y, &s).unwrap_err();
    assert!(e.to_string().contains("add_inplace y"), "{e}");
    let yb = upload(&[0.5; 16], &[16], DType::BF16).0;
    let e = kernels::add_inplace(&mut x, &yb, &s).unwrap_err();
    assert!(e.to_string().contains("dtype"), "{e}");
    let mut x32 = upload(&[0.5; 16], &[16], DType::F32).0;
    let e = kernels::activate(Activation::Silu, &mut x32, &s).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    stream_sync(&s);
}

// ---- embedding ---------------------------------------------------------------------------------

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

//! GPU tests: every CUDA kernel against its CPU twin on fresh seeded random inputs (never
//! zeros), outputs poisoned with NaN before the run, relative error ‖out − ref‖/‖ref‖ within a
//! budget per dtype (the CPU reference sees the same rounded inputs); the launchers' argument
//! checks; the runtime wrappers; the `ops` dispatch on CUDA tensors. One binary (every test
//! binary embeds every kernel), one module per kernel family.
//!
//! Without a device the tests pass after one line saying why they skipped — unless
//! `PARADEC_REQUIRE_GPU=1`, where no device is a failure. `PARADEC_GPU_SMALL=1` runs a small set of shapes that still covers every
//! code path (for compute-sanitizer).
//!
//! Built without the `cuda` feature, the binary holds one test that says so.

#[cfg(not(feature = "cuda"))]
#[test]
fn skipped_without_the_cuda_feature() {
    use std::io::Write;
    // Straight to stderr: the harness shows a passing test's eprintln! only with --nocapture.
    let _ = writeln!(
        std::io::stderr(),
        "gpu: skipped: built without the `cuda` feature (cargo test --features cuda)"
    );
}

/// Keeps the items below out of builds without the `cuda` feature.
macro_rules! cuda_only {
    ($($item:item)*) => { $(#[cfg(feature = "cuda")] $item)* };
}

cuda_only! {
#[path = "../common/mod.rs"]
mod common;

mod activation;
mod attention;
mod decoder;
mod embedding;
mod graph;
mod kv_quant;
mod linear;
mod norm;
mod ops;
mod rope;


use std::ffi::c_void;
use std::ptr;
use std::sync::{RwLock, RwLockReadGuard};

use paradec::cpu;
use paradec::cuda::kernels;
use paradec::cuda::{self, ffi, CudaEvent, CudaGraph, CudaStream, DeviceBuffer};
use paradec::tensor::Storage;
use paradec::vocab::Activation;
use paradec::vocab::Affine as DevAffine;
use paradec::vocab::NormKind;
use paradec::vocab::RopeStyle;
use paradec::vocab::{AttnMasking, AttnShape, CacheSlots, QkvLayout, RotaryArgs};
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
            // One line for the whole binary, not one per test.
            static SAID: std::sync::Once = std::sync::Once::new();
            // Straight to stderr: the test harness shows a passing test's eprintln! only with
            // --nocapture.
            SAID.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "gpu: skipped (first: {test}): no CUDA device ({e})"
                );
            });
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
}

//! Build script. Without the `cuda` feature it does nothing. With it:
//! - finds nvcc (NVCC, CUDA_HOME, CUDA_PATH, PATH, /usr/local/cuda) and the toolkit around it;
//! - compiles each `csrc/*.cu` in a build of its own with the `cc` crate's CUDA mode (each file
//!   is self-contained, so no relocatable device code and no device-link step across files),
//!   caching objects in `OUT_DIR` by content and flags so that editing one file rebuilds one
//!   object;
//! - targets sm_80, sm_86, sm_89, sm_90a machine code and compute_90 PTX, or the list in
//!   `PARADEC_CUDA_ARCHS` (e.g. `90a` for the GPU machine, `compute_90a` — PTX only, no ptxas —
//!   for CI's compile check);
//! - links the CUDA runtime **statically** (`libcudart_static.a`, so the binaries need only the
//!   driver's libcuda.so at run time) plus libstdc++, and the system libraries cudart needs;
//! - generates Rust declarations of `csrc/paradec_kernels.h` and of the few CUDA runtime calls
//!   paradec uses with bindgen, so Rust and C++ cannot drift apart.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "cuda")]
    cuda::build();
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::env;
    use std::path::{Path, PathBuf};

    /// Environment variables that change what this script produces.
    const ENV_VARS: &[&str] = &[
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "PARADEC_CUDA_ARCHS",
        "PARADEC_NVCC_FLAGS",
        "LIBCLANG_PATH",
    ];

    /// The default targets: Ampere (A100, A10/3090), Ada (L4/4090), Hopper (with its
    /// arch-specific features), and PTX for later chips (arch-specific PTX would not run there).
    const DEFAULT_ARCHS: &str = "80,86,89,90a,compute_90";

    /// The CUDA runtime calls paradec makes; bindgen declares only these.
    const RUNTIME_FUNCTIONS: &[&str] = &[
        "cudaGetErrorName",
        "cudaGetErrorString",
        "cudaGetLastError",
        "cudaDriverGetVersion",
        "cudaRuntimeGetVersion",
        "cudaGetDeviceCount",
        "cudaGetDevice",
        "cudaSetDevice",
        "cudaGetDeviceProperties",
        "cudaDeviceGetAttribute",
        "cudaDeviceSynchronize",
        "cudaMemGetInfo",
        "cudaMalloc",
        "cudaFree",
        "cudaMallocHost",
        "cudaFreeHost",
        "cudaMemcpy",
        "cudaMemcpyAsync",
        "cudaMemcpyPeer",
        "cudaMemset",
        "cudaMemsetAsync",
        "cudaStreamCreateWithFlags",
        "cudaStreamDestroy",
        "cudaStreamSynchronize",
        "cudaStreamBeginCapture",
        "cudaStreamIsCapturing",
        "cudaStreamEndCapture",
        "cudaGraphInstantiate",
        "cudaGraphLaunch",
        "cudaGraphDestroy",
        "cudaGraphExecDestroy",
        "cudaEventCreateWithFlags",
        "cudaEventDestroy",
        "cudaEventRecord",
        "cudaEventSynchronize",
        "cudaEventElapsedTime",
    ];

    pub fn build() {
        for v in ENV_VARS {
            println!("cargo:rerun-if-env-changed={v}");
        }
        // A directory: cargo rescans everything under it.
        println!("cargo:rerun-if-changed=csrc");

        let nvcc = find_nvcc();
        let home = nvcc
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| panic!("cannot derive the CUDA root from {}", nvcc.display()));
        let include = home.join("include");
        let archs = env::var("PARADEC_CUDA_ARCHS").unwrap_or_else(|_| DEFAULT_ARCHS.to_string());
        let gencode = gencode_flags(&archs);

        compile_kernels(&nvcc, &include, &gencode);
        link_cudart(&home);
        generate_bindings(&include);
    }

    /// nvcc from, in order: `NVCC`, `CUDA_HOME`/`CUDA_PATH` + bin/nvcc, `PATH`, /usr/local/cuda.
    /// A failure names everything that was tried, in one message.
    fn find_nvcc() -> PathBuf {
        let mut tried: Vec<String> = Vec::new();
        let mut candidates: Vec<(String, PathBuf)> = Vec::new();
        match env::var_os("NVCC") {
            Some(v) => candidates.push(("NVCC".into(), PathBuf::from(v))),
            None => tried.push("NVCC: not set".into()),
        }
        for var in ["CUDA_HOME", "CUDA_PATH"] {
            match env::var_os(var) {
                Some(v) => candidates.push((var.into(), PathBuf::from(v).join("bin").join("nvcc"))),
                None => tried.push(format!("{var}: not set")),
            }
        }
        match env::var_os("PATH") {
            Some(path) => {
                let found = env::split_paths(&path)
                    .map(|d| d.join("nvcc"))
                    .find(|p| p.is_file());
                match found {
                    Some(p) => candidates.push(("PATH".into(), p)),
                    None => tried.push("PATH: no nvcc in any of its directories".into()),
                }
            }
            None => tried.push("PATH: not set".into()),
        }
        candidates.push(("default".into(), PathBuf::from("/usr/local/cuda/bin/nvcc")));
        for (what, p) in candidates {
            if p.is_file() {
                return p;
            }
            tried.push(format!("{what}: {} does not exist", p.display()));
        }
        panic!(
            "\n\nparadec (feature `cuda`): cannot find nvcc. Tried:\n  - {}\n\
             Install a CUDA toolkit and set CUDA_HOME (or NVCC), or install the CUDA 13.0 \
             compiler from PyPI with\n    eval \"$(bash scripts/install-cuda-toolchain.sh)\"\n\n",
            tried.join("\n  - ")
        );
    }

    /// `-gencode` flags for a list like "80,86,89,90a,compute_90": a number (with an optional
    /// `sm_` prefix and `a` suffix) is machine code, `compute_XX` is PTX only.
    pub(super) fn gencode_flags(list: &str) -> Vec<String> {
        let mut flags = Vec::new();
        for item in list
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let flag = if let Some(ptx) = item.strip_prefix("compute_") {
                check_arch(item, ptx);
                format!("-gencode=arch=compute_{ptx},code=compute_{ptx}")
            } else {
                let sm = item.strip_prefix("sm_").unwrap_or(item);
                check_arch(item, sm);
                format!("-gencode=arch=compute_{sm},code=sm_{sm}")
            };
            flags.push(flag);
        }
        if flags.is_empty() {
            panic!(
                "PARADEC_CUDA_ARCHS={list:?} names no architecture (e.g. \"80,90a,compute_90\")"
            );
        }
        // The host code launches sm_90a-only kernels (wgmma) on a compute capability 9.0
        // device only when the build carries code for it.
        if flags.iter().any(|f| f.contains("arch=compute_90a")) {
            flags.push("-DPARADEC_SM90A_IMAGE=1".to_string());
        }
        flags
    }

    fn check_arch(item: &str, arch: &str) {
        let digits = arch.trim_end_matches(['a', 'f']);
        if digits.len() < 2 || !digits.chars().all(|c| c.is_ascii_digit()) {
            panic!(
                "PARADEC_CUDA_ARCHS: {item:?} is not an architecture: write 90a, sm_86 or \
                 compute_90 (PTX only)"
            );
        }
    }

    /// Compiles each `.cu` file to an object with the `cc` crate's CUDA mode (self-contained
    /// files: no `--device-c`, so no cross-file device link) and archives them into one static
    /// library. Objects are cached in `OUT_DIR` under a key of the file's content, every header's
    /// content, nvcc's path and the flags: a change to one `.cu` file rebuilds that object only
    /// (a header change rebuilds all). Changed files compile on parallel threads: nvcc and ptxas
    /// are single-threaded.
    fn compile_kernels(nvcc: &Path, include: &Path, gencode: &[String]) {
        let files = files_with(Path::new("csrc"), &["cu"]);
        let headers = files_with(Path::new("csrc"), &["h", "cuh"]);
        let extra: Vec<String> = env::var("PARADEC_NVCC_FLAGS")
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        // cc reads the compiler from NVCC for CUDA builds.
        env::set_var("NVCC", nvcc);
        let out = PathBuf::from(env::var("OUT_DIR").unwrap());
        let cache = out.join("cuda-objects");
        std::fs::create_dir_all(&cache).expect("creating the object cache");

        // What every object depends on besides its own source.
        let mut common = Fnv::new();
        for h in &headers {
            common.add(h.to_string_lossy().as_bytes());
            common.add(&std::fs::read(h).unwrap_or_else(|e| panic!("{}: {e}", h.display())));
        }
        common.add(nvcc.to_string_lossy().as_bytes());
        for f in gencode.iter().chain(&extra) {
            common.add(f.as_bytes());
        }
        common.add(BUILD_FLAGS.join(" ").as_bytes());

        let objects: Vec<(PathBuf, PathBuf)> = files
            .iter()
            .map(|file| {
                let mut key = common.clone();
                key.add(&std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display())));
                let stem = file.file_stem().unwrap().to_string_lossy().to_string();
                (
                    file.clone(),
                    cache.join(format!("{stem}-{:016x}.o", key.finish())),
                )
            })
            .collect();
        let stale: Vec<&(PathBuf, PathBuf)> =
            objects.iter().filter(|(_, o)| !o.is_file()).collect();
        if !stale.is_empty() {
            println!(
                "cargo:warning=paradec: compiling {} of {} CUDA files (the rest are cached)",
                stale.len(),
                objects.len()
            );
        }
        let failures: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = stale
                .iter()
                .map(|(file, obj)| {
                    let (extra, out) = (&extra, &out);
                    s.spawn(move || compile_one(file, obj, include, gencode, extra, out))
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap().err())
                .collect()
        });
        if !failures.is_empty() {
            panic!("{}", failures.join("\n"));
        }
        // Objects of older versions of each file are never needed again.
        let current: Vec<&PathBuf> = objects.iter().map(|(_, o)| o).collect();
        for e in std::fs::read_dir(&cache)
            .expect("reading the object cache")
            .flatten()
        {
            let p = e.path();
            if !current.contains(&&p) {
                let _ = std::fs::remove_file(&p);
            }
        }
        // Archive (cc runs `ar` and prints the link lines); no sources, only the objects.
        cc::Build::new()
            .objects(objects.iter().map(|(_, o)| o))
            .try_compile("paradec_cuda")
            .unwrap_or_else(|e| panic!("archiving the CUDA objects: {e}"));
    }

    /// Flags of every CUDA compile (besides -gencode and PARADEC_NVCC_FLAGS).
    const BUILD_FLAGS: &[&str] = &[
        "-std=c++17",
        "-O3",
        "-lineinfo",
        "--expt-relaxed-constexpr",
        "-Xcompiler=-Wall",
    ];

    /// Compiles one `.cu` file into `obj`.
    fn compile_one(
        file: &Path,
        obj: &Path,
        include: &Path,
        gencode: &[String],
        extra: &[String],
        out: &Path,
    ) -> Result<(), String> {
        let stem = file.file_stem().unwrap().to_string_lossy().to_string();
        let mut b = cc::Build::new();
        b.cuda(true)
            // cc would add -G (device debug: slow code, slower ptxas) with debug info.
            .debug(false)
            .opt_level(3)
            // cudart is linked below, from the toolkit's lib/ or lib64/.
            .cudart("none")
            .include(include)
            .include("csrc")
            .warnings(false)
            .out_dir(out.join("cuda-build").join(&stem))
            .file(file);
        for f in BUILD_FLAGS
            .iter()
            .copied()
            .chain(gencode.iter().map(String::as_str))
        {
            b.flag(f);
        }
        for f in extra {
            b.flag(f);
        }
        let built = b
            .try_compile_intermediates()
            .map_err(|e| format!("nvcc failed on {}: {e}", file.display()))?;
        let first = built
            .first()
            .ok_or_else(|| format!("nvcc produced no object for {}", file.display()))?;
        std::fs::copy(first, obj)
            .map(|_| ())
            .map_err(|e| format!("caching {}: {e}", obj.display()))
    }

    /// Files under `dir` (recursively) with one of these extensions, sorted.
    fn files_with(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d)
                .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
                .flatten()
            {
                let p = e.path();
                if p.is_dir() {
                    todo.push(p);
                } else if p.extension().is_some_and(|x| exts.iter().any(|e| x == *e)) {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// FNV-1a, 64-bit: a stable content key (std's hasher may change between Rust versions).
    #[derive(Clone)]
    struct Fnv(u64);

    impl Fnv {
        fn new() -> Self {
            Fnv(0xcbf2_9ce4_8422_2325)
        }
        fn add(&mut self, bytes: &[u8]) {
            for &b in bytes.iter().chain(&[0xff]) {
                self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        fn finish(&self) -> u64 {
            self.0
        }
    }

    /// Static cudart (plus what it needs) from the toolkit's lib64/ or lib/ (the PyPI wheels use
    /// lib/, distribution toolkits lib64/ or targets/<arch>-linux/lib/).
    fn link_cudart(home: &Path) {
        let candidates = [
            home.join("lib64"),
            home.join("lib"),
            home.join("targets/x86_64-linux/lib"),
            home.join("targets/sbsa-linux/lib"),
        ];
        let dir = candidates
            .iter()
            .find(|d| d.join("libcudart_static.a").is_file())
            .unwrap_or_else(|| {
                panic!(
                    "libcudart_static.a not found in any of: {}",
                    candidates
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-lib=static=cudart_static");
        for lib in ["stdc++", "dl", "rt", "pthread"] {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }

    /// Bindings, generated once with libclang's own builtin headers and, where that libclang
    /// comes without them (the PyPI `libclang` wheel), again with the host C compiler's.
    fn generate_bindings(include: &Path) {
        let first = try_bindings(include, &[]);
        let bindings = match first {
            Ok(b) => b,
            Err(e) if e.contains("file not found") => {
                let extra = host_builtin_includes();
                try_bindings(include, &extra).unwrap_or_else(|e2| {
                    panic!(
                        "bindgen failed on csrc/paradec_kernels.h + cuda_runtime_api.h: {e}\n\
                         and again with the host compiler's builtin headers {extra:?}: {e2}\n\
                         bindgen needs libclang: install Debian's libclang-dev, or run \
                         scripts/install-cuda-toolchain.sh and export the LIBCLANG_PATH it prints"
                    )
                })
            }
            Err(e) => panic!(
                "bindgen failed on csrc/paradec_kernels.h + cuda_runtime_api.h: {e}\n\
                 bindgen needs libclang: install Debian's libclang-dev, or run \
                 scripts/install-cuda-toolchain.sh and export the LIBCLANG_PATH it prints"
            ),
        };
        let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("cuda_bindings.rs");
        bindings
            .write_to_file(&out)
            .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
    }

    /// `-isystem` flags for the host compiler's builtin headers (stddef.h, limits.h, ...).
    fn host_builtin_includes() -> Vec<String> {
        let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
        let mut flags = Vec::new();
        for name in ["include", "include-fixed"] {
            let out = std::process::Command::new(&cc)
                .arg(format!("-print-file-name={name}"))
                .output();
            if let Ok(o) = out {
                let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if Path::new(&dir).is_absolute() && Path::new(&dir).is_dir() {
                    flags.push(format!("-isystem{dir}"));
                }
            }
        }
        flags
    }

    fn try_bindings(include: &Path, extra: &[String]) -> Result<bindgen::Bindings, String> {
        let mut b = bindgen::Builder::default()
            .header("csrc/paradec_kernels.h")
            .header_contents("paradec_cuda_runtime.h", "#include <cuda_runtime_api.h>\n")
            .clang_arg(format!("-I{}", include.display()))
            .allowlist_function("paradec_.*")
            .allowlist_type("paradec_.*")
            .allowlist_var("PARADEC_.*")
            .allowlist_type("cudaError")
            .allowlist_type("cudaMemcpyKind")
            .allowlist_type("cudaDeviceAttr")
            .allowlist_type("cudaStreamCaptureMode")
            .allowlist_type("cudaStreamCaptureStatus")
            .default_enum_style(bindgen::EnumVariation::ModuleConsts)
            .layout_tests(false)
            .derive_default(true)
            .generate_comments(false)
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
        for f in RUNTIME_FUNCTIONS {
            b = b.allowlist_function(f);
        }
        b.clang_args(extra).generate().map_err(|e| e.to_string())
    }
}

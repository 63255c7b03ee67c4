//! The C programs of `examples/c/`, compiled with `cc -std=c11 -Wall -Wextra -Werror` against
//! `include/paradec.h` and both the static and the shared library, and run:
//! - `decode.c` on every fixture: its tokens must equal the Rust main job's (`src/bin/decode.rs`);
//! - `kernels.c` (host pointers) and `layer.c` (layer / model level) check their own results;
//! - `errors.c` walks every error path, also under AddressSanitizer and (where installed)
//!   valgrind;
//! - `cuda.c` is compiled where the CUDA headers are found, and run when the library has CUDA;
//! - the header compiles as C++17 with -Werror;
//! - every function the header declares is called by at least one C program.
//!
//! Without a C compiler these tests print why and pass, unless `PARADEC_REQUIRE_CC=1` (CI).

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const STATIC_LIBS: &[&str] = &["-lstdc++", "-lpthread", "-ldl", "-lrt", "-lm"];

fn require() -> bool {
    std::env::var("PARADEC_REQUIRE_CC").is_ok_and(|v| v == "1")
}

/// Skips (returns None) or fails, by `PARADEC_REQUIRE_CC`, with a reason.
fn skip<T>(why: &str) -> Option<T> {
    if require() {
        panic!("PARADEC_REQUIRE_CC=1 but {why}");
    }
    eprintln!("skipped: {why} (set PARADEC_REQUIRE_CC=1 to make this an error)");
    None
}

fn tool(var: &str, default: &str) -> Option<String> {
    let cc = std::env::var(var).unwrap_or_else(|_| default.to_string());
    let ok = Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(cc)
}

/// The directory holding libparadec.a / libparadec.so of this build: `target/<profile>/deps`,
/// where cargo writes every crate type of the lib next to the test binaries (the copies one
/// level up are refreshed only when the lib itself is a requested target).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    for f in ["libparadec.a", "libparadec.so"] {
        assert!(
            deps.join(f).exists(),
            "{} is missing: the lib target builds it (crate-type staticlib + cdylib)",
            deps.join(f).display()
        );
    }
    deps
}

struct Build {
    cc: String,
    out: tempfile::TempDir,
    lib: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Link {
    Static,
    Shared,
}

impl Build {
    fn new() -> Option<Self> {
        let cc = match tool("CC", "cc") {
            Some(c) => c,
            None => return skip("no C compiler (cc, or $CC) was found"),
        };
        Some(Build {
            cc,
            out: tempfile::tempdir().unwrap(),
            lib: lib_dir(),
        })
    }

    /// Compiles and links `examples/c/<name>.c`; returns the executable.
    fn program(&self, name: &str, link: Link, extra: &[&str]) -> PathBuf {
        let tag = if extra.is_empty() {
            ""
        } else {
            "-instrumented"
        };
        let exe = self.out.path().join(format!("{name}-{link:?}{tag}"));
        let src = Path::new(ROOT).join(format!("examples/c/{name}.c"));
        let mut cmd = Command::new(&self.cc);
        cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"])
            .arg(format!("-I{ROOT}/include"))
            .args(extra)
            .arg(&src)
            .arg("-o")
            .arg(&exe);
        match link {
            Link::Static => {
                cmd.arg(self.lib.join("libparadec.a")).args(STATIC_LIBS);
            }
            Link::Shared => {
                cmd.arg(format!("-L{}", self.lib.display()))
                    .arg("-lparadec")
                    .arg(format!("-Wl,-rpath,{}", self.lib.display()))
                    .arg("-lm"); // the examples' own math
            }
        }
        run_ok(&mut cmd, &format!("compiling {name}.c ({link:?})"));
        exe
    }
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("tests/fixtures"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").exists())
        .collect();
    v.sort();
    v
}

/// The "greedy [...]" token lists of a decode run, one per sequence.
fn greedy_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split("greedy ").nth(1).map(str::to_string))
        .collect()
}

fn join(v: &[i64]) -> String {
    v.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

const STEPS: usize = 3;

/// The Rust main job's tokens: `src/bin/decode.rs`, which cargo builds for these tests.
fn rust_tokens(dir: &Path) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_decode"))
        .args([
            "--model",
            dir.to_str().unwrap(),
            "--steps",
            &STEPS.to_string(),
        ])
        .output()
        .unwrap();
    greedy_lines(&String::from_utf8_lossy(&out.stdout))
}

fn reference_prompt(dir: &Path) -> (usize, Vec<i64>, Vec<i64>) {
    let r = paradec::Weights::from_files(&[dir.join("reference.safetensors")]).unwrap();
    let ints = |n: &str| r.get(n).unwrap().as_i64().unwrap().to_vec();
    (2, ints("input_ids"), ints("step0.attention_mask"))
}

#[test]
fn decode_program_matches_the_rust_decode_on_every_fixture() {
    let Some(b) = Build::new() else { return };
    let exes = [
        b.program("decode", Link::Static, &[]),
        b.program("decode", Link::Shared, &[]),
    ];
    let dirs = fixtures();
    assert!(dirs.len() >= 10, "fixtures: {dirs:?}");
    for dir in &dirs {
        let want = rust_tokens(dir);
        assert_eq!(
            want.len(),
            2,
            "{}: Rust decode tokens {want:?}",
            dir.display()
        );
        let (batch, prompt, mask) = reference_prompt(dir);
        for exe in &exes {
            let out = run_ok(
                Command::new(exe).arg(dir).args([
                    "--steps",
                    &STEPS.to_string(),
                    "--batch",
                    &batch.to_string(),
                    "--ids",
                    &join(&prompt),
                    "--mask",
                    &join(&mask),
                ]),
                &format!("{} on {}", exe.display(), dir.display()),
            );
            assert_eq!(
                greedy_lines(&out),
                want,
                "{}: C tokens differ from the Rust decode binary's\n{out}",
                dir.display()
            );
        }
        eprintln!("{}: C tokens = Rust tokens {want:?}", dir.display());
    }
    // Without --ids the C program uses the Rust decode binary's fixed prompt.
    let out = run_ok(
        Command::new(&exes[0]).arg(&dirs[0]),
        "decode with the built-in prompt",
    );
    assert!(
        out.contains("prompt [3, 10, 17, 24, 31, 38, 45, 52]"),
        "{out}"
    );
}

#[test]
fn kernel_program_on_host_pointers() {
    let Some(b) = Build::new() else { return };
    for link in [Link::Static, Link::Shared] {
        let out = run_ok(
            &mut Command::new(b.program("kernels", link, &[])),
            "kernels",
        );
        assert!(out.contains("KERNELS: all ok"), "{out}");
    }
}

#[test]
fn layer_program() {
    let Some(b) = Build::new() else { return };
    let neox = Path::new(ROOT).join("tests/fixtures/gpt_neox");
    for link in [Link::Static, Link::Shared] {
        let out = run_ok(
            Command::new(b.program("layer", link, &[])).arg(&neox),
            "layer",
        );
        assert!(out.contains("LAYER: all ok"), "{out}");
    }
}

fn errors_ok(out: &str) {
    assert!(out.contains("ERRORS: all ok"), "{out}");
}

#[test]
fn error_program_walks_every_error_path() {
    let Some(b) = Build::new() else { return };
    let model = Path::new(ROOT).join("tests/fixtures/gpt_neox");
    for link in [Link::Static, Link::Shared] {
        errors_ok(&run_ok(
            Command::new(b.program("errors", link, &[])).arg(&model),
            "errors",
        ));
    }
}

#[test]
fn error_program_is_clean_under_asan_and_valgrind() {
    let Some(b) = Build::new() else { return };
    let model = Path::new(ROOT).join("tests/fixtures/gpt_neox");
    // AddressSanitizer (with LeakSanitizer): the C side is instrumented, and every allocation
    // paradec makes goes through the intercepted malloc, so leaks and bad frees show.
    let probe = b.out.path().join("asan-probe.c");
    std::fs::write(&probe, "int main(void) { return 0; }\n").unwrap();
    let asan = Command::new(&b.cc)
        .args(["-fsanitize=address", "-o"])
        .arg(b.out.path().join("asan-probe"))
        .arg(&probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if asan {
        let exe = b.program(
            "errors",
            Link::Static,
            &["-fsanitize=address", "-fno-omit-frame-pointer"],
        );
        let out = run_ok(
            Command::new(exe).arg(&model).env(
                "ASAN_OPTIONS",
                "detect_leaks=1:abort_on_error=0:exitcode=23",
            ),
            "errors under AddressSanitizer",
        );
        errors_ok(&out);
    } else {
        skip::<()>("the C compiler cannot link -fsanitize=address (install libasan)");
    }
    match tool("VALGRIND", "valgrind") {
        Some(vg) => {
            let exe = b.program("errors", Link::Static, &[]);
            let out = run_ok(
                Command::new(vg)
                    .args([
                        "--error-exitcode=23",
                        "--leak-check=full",
                        "--errors-for-leak-kinds=definite",
                        "-q",
                    ])
                    .arg(exe)
                    .arg(&model),
                "errors under valgrind",
            );
            errors_ok(&out);
        }
        None => eprintln!("valgrind not installed: the valgrind run is skipped"),
    }
}

/// Where the CUDA runtime's headers are, if anywhere.
fn cuda_include() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|d| PathBuf::from(d).join("include"))
        .collect();
    candidates.push("/usr/local/cuda/include".into());
    if let Some(home) = std::env::var_os("HOME") {
        let venv = PathBuf::from(home).join(".cache/paradec/cuda-13.0/lib");
        if let Ok(rd) = std::fs::read_dir(&venv) {
            for py in rd.flatten() {
                candidates.push(py.path().join("site-packages/nvidia/cu13/include"));
            }
        }
    }
    candidates
        .into_iter()
        .find(|d| d.join("cuda_runtime_api.h").exists())
}

#[test]
fn cuda_program_compiles_against_the_header() {
    let Some(b) = Build::new() else { return };
    let Some(inc) = cuda_include() else {
        eprintln!("skipped: no CUDA headers (CUDA_HOME, /usr/local/cuda, the PyPI toolchain)");
        return;
    };
    let obj = b.out.path().join("cuda.o");
    run_ok(
        Command::new(&b.cc)
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-c"])
            .arg(format!("-I{ROOT}/include"))
            .arg(format!("-I{}", inc.display()))
            .arg(format!("{ROOT}/examples/c/cuda.c"))
            .arg("-o")
            .arg(&obj),
        "compiling cuda.c",
    );
    if cfg!(feature = "cuda") {
        // The static library carries the CUDA runtime (linked statically into paradec).
        let exe = b.out.path().join("cuda");
        run_ok(
            Command::new(&b.cc)
                .arg(&obj)
                .arg(b.lib.join("libparadec.a"))
                .args(STATIC_LIBS)
                .arg("-o")
                .arg(&exe),
            "linking cuda.c",
        );
        let model = format!("{ROOT}/tests/fixtures/gpt_neox");
        let out = run_ok(Command::new(&exe).arg(&model), "cuda");
        assert!(
            out.contains("CUDA: all ok") || out.contains("skipped"),
            "{out}"
        );
    }
}

#[test]
fn header_compiles_as_cpp17() {
    let Some(b) = Build::new() else { return };
    let Some(cxx) = tool("CXX", "c++") else {
        skip::<()>("no C++ compiler (c++, or $CXX) was found");
        return;
    };
    let src = b.out.path().join("header.cpp");
    std::fs::write(
        &src,
        "#include \"paradec.h\"\n#include <cstdio>\n\
         int main() {\n  std::printf(\"%s\\n\", paradec_version());\n  \
         return paradec_version_number() == PARADEC_VERSION_NUMBER ? 0 : 1;\n}\n",
    )
    .unwrap();
    let exe = b.out.path().join("header-cpp");
    run_ok(
        Command::new(cxx)
            .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"])
            .arg(format!("-I{ROOT}/include"))
            .arg(&src)
            .arg(b.lib.join("libparadec.a"))
            .args(STATIC_LIBS)
            .arg("-o")
            .arg(&exe),
        "compiling the header as C++17",
    );
    let out = run_ok(&mut Command::new(&exe), "the C++ program");
    assert_eq!(out.trim(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn every_exported_function_is_called_by_a_c_program() {
    let header = std::fs::read_to_string(Path::new(ROOT).join("include/paradec.h")).unwrap();
    let mut sources = String::new();
    for e in std::fs::read_dir(Path::new(ROOT).join("examples/c")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "c" || x == "h") {
            sources += &std::fs::read_to_string(&p).unwrap();
        }
    }
    let mut missing = Vec::new();
    let mut n = 0;
    for line in header.lines() {
        // Declarations: "<type> paradec_name(" at the start of a line.
        if line.starts_with(' ') || line.starts_with('#') || line.starts_with('*') {
            continue;
        }
        let Some(open) = line.find('(') else { continue };
        let Some(name) = line[..open].split_whitespace().last() else {
            continue;
        };
        let name = name.trim_start_matches('*');
        if !name.starts_with("paradec_") {
            continue;
        }
        n += 1;
        if !sources.contains(&format!("{name}(")) {
            missing.push(name.to_string());
        }
    }
    assert!(n > 50, "found only {n} declarations in the header");
    assert!(
        missing.is_empty(),
        "exported but called by no program in examples/c: {missing:?}"
    );
}

#[test]
fn installed_prefix_links_through_pkg_config() {
    let Some(b) = Build::new() else { return };
    let Some(pc) = tool("PKG_CONFIG", "pkg-config") else {
        skip::<()>("no pkg-config was found");
        return;
    };
    let prefix = b.out.path().join("prefix");
    run_ok(
        Command::new("bash")
            .arg(format!("{ROOT}/scripts/install-capi.sh"))
            .args(["--no-build", "--libdir"])
            .arg(&b.lib)
            .arg("--prefix")
            .arg(&prefix),
        "scripts/install-capi.sh",
    );
    let pc_path = prefix.join("lib/pkgconfig");
    let query = |args: &[&str]| {
        run_ok(
            Command::new(&pc)
                .args(args)
                .env("PKG_CONFIG_PATH", &pc_path),
            "pkg-config",
        )
    };
    assert_eq!(
        query(&["--modversion", "paradec"]).trim(),
        env!("CARGO_PKG_VERSION")
    );
    assert!(prefix
        .join("lib/cmake/paradec/paradecConfig.cmake")
        .exists());
    // The README's shared link line: pkg-config's flags.
    let flags = query(&["--cflags", "--libs", "paradec"]);
    let exe = b.out.path().join("kernels-pkg-config");
    run_ok(
        Command::new(&b.cc)
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
            .arg(format!("{ROOT}/examples/c/kernels.c"))
            .args(flags.split_whitespace())
            .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()))
            .args(["-lm", "-o"])
            .arg(&exe),
        "linking kernels.c through pkg-config",
    );
    assert!(run_ok(&mut Command::new(&exe), "kernels (pkg-config)").contains("all ok"));
    // The README's static link line.
    let exe = b.out.path().join("kernels-static-prefix");
    run_ok(
        Command::new(&b.cc)
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
            .arg(format!("-I{}", prefix.join("include").display()))
            .arg(format!("{ROOT}/examples/c/kernels.c"))
            .arg(prefix.join("lib/libparadec.a"))
            .args(STATIC_LIBS)
            .arg("-o")
            .arg(&exe),
        "linking kernels.c statically from the prefix",
    );
    assert!(run_ok(&mut Command::new(&exe), "kernels (static)").contains("all ok"));
}

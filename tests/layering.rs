//! The crate's import picture (docs/ARCHITECTURE.md), checked on the source: every `crate::`
//! path in a module names a module of the same layer or one below it, and the two backends
//! never name each other.

use std::path::{Path, PathBuf};

/// Layers from the bottom. `cuda_runtime` is the CUDA runtime wrappers (buffers, streams,
/// events, graphs), which tensors and streams hold; `cuda_kernels` is the CUDA backend.
const LAYERS: &[&[&str]] = &[
    &["error", "limits", "cuda_runtime"],
    &["tensor", "stream", "vocab"],
    &["weights"],
    &["quant"],
    &["arch"],
    &["cache", "workspace", "kv_quant"],
    &["cpu", "cuda_kernels"],
    &["ops"],
    &["layers"],
    &["model"],
    &["capi"],
];

/// Pairs on one layer that must not know each other.
const APART: &[(&str, &str)] = &[("cpu", "cuda_kernels"), ("cuda_kernels", "cpu")];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is not placed in LAYERS: place it"))
}

/// The layer name of a path below src/ (a file or the folder it sits in).
fn module_of_file(rel: &Path) -> Option<String> {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.first().map(String::as_str) {
        Some("lib") | None => None,
        Some("cuda") if parts.get(1).map(String::as_str) == Some("kernels") => {
            Some("cuda_kernels".into())
        }
        Some("cuda") => Some("cuda_runtime".into()),
        Some(m) => Some(m.to_string()),
    }
}

/// The layer a `crate::a::b` path names.
fn module_of_path(a: &str, b: Option<&str>) -> Option<String> {
    match (a, b) {
        ("cuda", Some("kernels")) => Some("cuda_kernels".into()),
        ("cuda", _) => Some("cuda_runtime".into()),
        // Re-exports at the crate root: the module each comes from.
        ("Error" | "Result", _) => Some("error".into()),
        ("Tensor" | "DType" | "Device" | "HostData", _) => Some("tensor".into()),
        ("Stream", _) => Some("stream".into()),
        ("Weights", _) => Some("weights".into()),
        ("ArchParams", _) => Some("arch".into()),
        ("KvCache", _) => Some("cache".into()),
        ("KvCacheMode" | "PagedTable", _) => Some("kv_quant".into()),
        ("Workspace", _) => Some("workspace".into()),
        ("AttnParams" | "ParallelDecoder" | "Intermediates", _) => Some("layers".into()),
        ("Model" | "ModelOutput", _) => Some("model".into()),
        (m, _) if m.chars().next().is_some_and(|c| c.is_ascii_lowercase()) => Some(m.into()),
        _ => None,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::x` (and `crate::{x, y::z}`) path in a source text, with its line.
fn crate_paths(text: &str) -> Vec<(usize, String, Option<String>)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if rest[..i].ends_with('$') {
                rest = after;
                continue;
            }
            let names: Vec<&str> = if let Some(group) = after.strip_prefix('{') {
                group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .collect()
            } else {
                vec![after]
            };
            for name in names {
                let mut segs = name
                    .split("::")
                    .map(|s| s.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_')));
                let a = segs.next().unwrap_or("").to_string();
                let b = segs.next().map(str::to_string);
                if !a.is_empty() {
                    found.push((n + 1, a, b));
                }
            }
            rest = after;
        }
    }
    found
}

#[test]
fn imports_point_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    let mut checked = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let Some(from) = module_of_file(rel) else {
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (line, a, b) in crate_paths(&text) {
            let Some(to) = module_of_path(&a, b.as_deref()) else {
                continue;
            };
            checked += 1;
            if to == from {
                continue;
            }
            let upward = layer_of(&to) > layer_of(&from);
            let apart = APART.contains(&(from.as_str(), to.as_str()));
            if upward || apart {
                bad.push(format!(
                    "{}:{line}: {from} imports {to}{}",
                    rel.display(),
                    if apart {
                        " (the backends never import each other)"
                    } else {
                        " (an upward import)"
                    }
                ));
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} crate:: paths found: is the scan broken?"
    );
    assert!(
        bad.is_empty(),
        "imports against the layering:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_scan_sees_grouped_and_nested_paths() {
    let p = crate_paths("use crate::{Error, cuda::kernels::x};\nlet y = crate::model::stack::f(); // crate::layers\n");
    let got: Vec<(String, Option<String>)> = p.into_iter().map(|(_, a, b)| (a, b)).collect();
    assert_eq!(
        got,
        vec![
            ("Error".to_string(), None),
            ("cuda".to_string(), Some("kernels".to_string())),
            ("model".to_string(), Some("stack".to_string())),
        ]
    );
    assert_eq!(
        module_of_file(Path::new("cuda/kernels/norm.rs")).as_deref(),
        Some("cuda_kernels")
    );
    assert_eq!(
        module_of_file(Path::new("cuda/buffer.rs")).as_deref(),
        Some("cuda_runtime")
    );
    assert!(layer_of("model") > layer_of("layers"));
}

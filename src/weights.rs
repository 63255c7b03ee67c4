//! `Weights`: a read-only, memory-mapped view over a model directory's safetensors files
//! (one file, or shards listed in `model.safetensors.index.json`), looked up by tensor name.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::SafeTensors;

use crate::tensor::{DType, HostData, Tensor};
use crate::{Error, Result};

/// One tensor's header facts and its bytes inside a mapped file.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: &'a [usize],
    /// The raw little-endian bytes (memory-mapped).
    pub data: &'a [u8],
}

struct Shard {
    path: PathBuf,
    mmap: Mmap,
}

/// The tensors of one or more safetensors files.
pub struct Weights {
    shards: Vec<Shard>,
    /// name -> (shard index, dtype, shape, byte range inside the mapped file)
    index: HashMap<String, (usize, DType, Vec<usize>, std::ops::Range<usize>)>,
}

fn convert_dtype(name: &str, dt: safetensors::Dtype) -> Result<DType> {
    use safetensors::Dtype as S;
    Ok(match dt {
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::F32 => DType::F32,
        S::I8 => DType::I8,
        S::U8 => DType::U8,
        S::I16 => DType::I16,
        S::I32 => DType::I32,
        S::I64 => DType::I64,
        other => {
            return Err(Error::unsupported(format!(
                "tensor {name}: dtype {other:?} is not supported"
            )))
        }
    })
}

/// Rejects a header whose data offsets point past the end of the file before the safetensors
/// crate sees it: safetensors 0.8's `read_metadata` adds the last offset to the header length
/// unchecked, which overflows (a panic in debug builds) for crafted offsets near 2^64. Anything
/// else malformed is left for `read_metadata` to report.
fn check_offsets(path: &Path, bytes: &[u8]) -> Result<()> {
    let Some(len8) = bytes.get(..8) else {
        return Ok(());
    };
    let n = u64::from_le_bytes([
        len8[0], len8[1], len8[2], len8[3], len8[4], len8[5], len8[6], len8[7],
    ]);
    let header = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_add(8))
        .and_then(|end| bytes.get(8..end));
    let Some(header) = header else { return Ok(()) };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(header)
    else {
        return Ok(());
    };
    let data_len = (bytes.len() - 8 - header.len()) as u64;
    for (name, info) in &map {
        let offsets = info.get("data_offsets").and_then(|v| v.as_array());
        for o in offsets.into_iter().flatten().filter_map(|o| o.as_u64()) {
            if o > data_len {
                return Err(Error::bad_format(format!(
                    "{}: tensor {name}: data offset {o} is past the end of the file's {data_len} data bytes",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

impl Weights {
    /// Maps a directory: the shards of `model.safetensors.index.json` if present, else
    /// `model.safetensors`, else every `*.safetensors` but PEFT's `adapter_*` files.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| Error::Io(format!("{}: {e}", index_path.display())))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::bad_format(format!("{}: {e}", index_path.display())))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    Error::bad_format(format!(
                        "{}: no \"weight_map\" object",
                        index_path.display()
                    ))
                })?;
            let mut names: Vec<String> = Vec::new();
            for (tensor, file) in map {
                let f = file.as_str().ok_or_else(|| {
                    Error::bad_format(format!(
                        "{}: weight_map[{tensor}] is not a string",
                        index_path.display()
                    ))
                })?;
                if f.contains('/') || f.contains('\\') || f.contains("..") {
                    return Err(Error::bad_format(format!(
                        "{}: shard name {f:?} must be a plain file name",
                        index_path.display()
                    )));
                }
                if !names.iter().any(|n| n == f) {
                    names.push(f.to_string());
                }
            }
            names.sort();
            names.into_iter().map(|f| dir.join(f)).collect()
        } else if dir.join("model.safetensors").exists() {
            vec![dir.join("model.safetensors")]
        } else {
            let rd =
                std::fs::read_dir(dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("adapter_"))
                })
                .collect();
            v.sort();
            if v.is_empty() {
                return Err(Error::not_found(format!(
                    "no *.safetensors files in {}",
                    dir.display()
                )));
            }
            v
        };
        Self::from_files(&files)
    }

    /// Maps the given files. A tensor name found in two files is an error.
    pub fn from_files(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for (si, path) in paths.iter().enumerate() {
            let file =
                File::open(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
            // SAFETY: the file is opened read-only and the map is never written through. paradec
            // assumes, as every safetensors reader does, that model files are not truncated or
            // rewritten by another process while mapped.
            let mmap = unsafe { Mmap::map(&file) }
                .map_err(|e| Error::Io(format!("{}: cannot map: {e}", path.display())))?;
            check_offsets(path, &mmap)?;
            let (header_len, meta) = SafeTensors::read_metadata(&mmap)
                .map_err(|e| Error::bad_format(format!("{}: {e}", path.display())))?;
            let base = 8 + header_len;
            for (name, info) in meta.tensors() {
                let dtype = convert_dtype(&name, info.dtype)?;
                crate::limits::check_shape(
                    &format!("{}: tensor {name}", path.display()),
                    &info.shape,
                )?;
                let (start, end) = info.data_offsets;
                let range = base + start..base + end;
                if range.end > mmap.len() {
                    return Err(Error::bad_format(format!(
                        "{}: tensor {name} extends past the end of the file",
                        path.display()
                    )));
                }
                if index
                    .insert(name.clone(), (si, dtype, info.shape.clone(), range))
                    .is_some()
                {
                    return Err(Error::bad_format(format!(
                        "tensor {name} appears in more than one file (second: {})",
                        path.display()
                    )));
                }
            }
            shards.push(Shard {
                path: path.clone(),
                mmap,
            });
        }
        Ok(Weights { shards, index })
    }

    /// Tensors held in memory (e.g. a C caller's), copied once into one anonymous map so they
    /// are looked up like a file's: each entry is (name, dtype, shape, little-endian bytes).
    pub fn from_memory(entries: &[(&str, DType, &[usize], &[u8])]) -> Result<Self> {
        let total = entries
            .iter()
            .try_fold(0usize, |a, e| a.checked_add(e.3.len()));
        let total = total.ok_or_else(|| Error::bad_input("tensor bytes overflow"))?;
        let mut map = memmap2::MmapMut::map_anon(total.max(1))
            .map_err(|e| Error::OutOfMemory(format!("host: {total} bytes of tensors: {e}")))?;
        let mut index = HashMap::new();
        let mut at = 0;
        for &(name, dtype, shape, bytes) in entries {
            let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
            if n.and_then(|n| n.checked_mul(dtype.size())) != Some(bytes.len()) {
                return Err(Error::bad_input(format!(
                    "tensor {name}: {} bytes do not hold shape {shape:?} of {dtype}",
                    bytes.len()
                )));
            }
            map[at..at + bytes.len()].copy_from_slice(bytes);
            if index
                .insert(
                    name.to_string(),
                    (0, dtype, shape.to_vec(), at..at + bytes.len()),
                )
                .is_some()
            {
                return Err(Error::bad_input(format!("tensor {name} is given twice")));
            }
            at += bytes.len();
        }
        let mmap = map
            .make_read_only()
            .map_err(|e| Error::Io(format!("anonymous map: {e}")))?;
        Ok(Weights {
            shards: vec![Shard {
                path: PathBuf::from("<memory>"),
                mmap,
            }],
            index,
        })
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.index.keys().map(|s| s.as_str()).collect();
        v.sort();
        v
    }
    /// The file a tensor lives in (for error messages).
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.index
            .get(name)
            .map(|(si, ..)| self.shards[*si].path.as_path())
    }

    /// A borrowed view of a tensor, or `NotFound` naming it.
    pub fn view(&self, name: &str) -> Result<TensorView<'_>> {
        let (si, dtype, shape, range) = self
            .index
            .get(name)
            .ok_or_else(|| Error::not_found(format!("tensor {name}")))?;
        Ok(TensorView {
            dtype: *dtype,
            shape,
            data: &self.shards[*si].mmap[range.clone()],
        })
    }
    /// A tensor by name, copied to host memory in its stored dtype.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let v = self.view(name)?;
        let data = HostData::from_le_bytes(v.dtype, v.data)
            .map_err(|e| Error::bad_format(format!("tensor {name}: {e}")))?;
        Tensor::from_host(data, v.shape)
            .map_err(|e| Error::bad_format(format!("tensor {name}: {e}")))
    }
    /// A tensor by name, or None when absent.
    pub fn get_opt(&self, name: &str) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.get(name).map(Some)
        } else {
            Ok(None)
        }
    }
    /// A float tensor of the given shape (any float dtype), or an error naming what differs.
    pub fn get_float(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get(name)?;
        if !t.dtype().is_float() {
            return Err(Error::bad_input(format!(
                "tensor {name}: expected a float dtype (f16, bf16, f32), got {}",
                t.dtype()
            )));
        }
        t.check(&format!("tensor {name}"), None, shape)?;
        Ok(t)
    }
    /// As `get_float`, or None when absent.
    pub fn get_float_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.get_float(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Writes tensors to a safetensors file (used by packers, tests and tools).
pub fn save_safetensors(
    path: impl AsRef<Path>,
    tensors: &[(String, &Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    use safetensors::tensor::TensorView as StView;
    let mut bufs = Vec::new();
    for (name, t) in tensors {
        bufs.push((
            name.clone(),
            t.to_host()?.host()?.to_le_bytes(),
            t.dtype(),
            t.shape().to_vec(),
        ));
    }
    let views: Vec<(String, StView<'_>)> = bufs
        .iter()
        .map(|(n, b, dt, shape)| {
            let sd = match dt {
                DType::F16 => safetensors::Dtype::F16,
                DType::BF16 => safetensors::Dtype::BF16,
                DType::F32 => safetensors::Dtype::F32,
                DType::I8 => safetensors::Dtype::I8,
                DType::U8 => safetensors::Dtype::U8,
                DType::I16 => safetensors::Dtype::I16,
                DType::I32 => safetensors::Dtype::I32,
                DType::I64 => safetensors::Dtype::I64,
            };
            StView::new(sd, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::bad_input(format!("tensor {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, metadata, path.as_ref())
        .map_err(|e| Error::Io(format!("{}: {e}", path.as_ref().display())))
}

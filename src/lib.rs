//! paradec: the parallel-residual transformer decoder block (`x + Attn(norm(x)) + Mlp(norm(x))`)
//! of GPT-J, GPT-NeoX, Phi, Falcon, Cohere and Cohere2, with a CPU reference path that matches
//! HF transformers and (feature `cuda`) CUDA kernels.
//!
//! Load a model directory with [`Model::load`], make a [`KvCache`] and a [`Workspace`], and run
//! [`Model::forward`] on a [`Stream`] with the [`AttnParams`] of the call (batch, query length,
//! each sequence's past length, left padding). One block is a [`ParallelDecoder`]; the ops it is
//! made of are in [`ops`], dispatched to the CPU reference ([`cpu`]) or CUDA kernels by device.
//! `docs/ARCHITECTURE.md` in the repository draws how the modules are layered.
//!
//! ```
//! use paradec::{AttnParams, DType, Device, KvCache, Model, Stream, Workspace};
//!
//! fn main() -> paradec::Result<()> {
//!     // A model directory (config.json + safetensors). A relative path resolves against the
//!     // current directory: run this from the repository root (cargo runs doctests there).
//!     let model = Model::load("tests/fixtures/cohere2")?;
//!     let vocab = model.arch.vocab;
//!     let mut cache = KvCache::for_model(&model.arch, 1, 64, DType::F32, Device::Cpu)?;
//!     let mut ws = Workspace::cpu();
//!     let s = Stream::Host;
//!
//!     // Prefill: one sequence of three tokens; logits are [batch, q_len, vocab].
//!     let prompt = [5, 17, 42];
//!     let params = AttnParams::new(1, prompt.len());
//!     let logits = model.forward(&s, &prompt, &params, Some(&mut cache), &mut ws)?;
//!     let next = argmax(&logits.f32_values()?[2 * vocab..]);
//!
//!     // One decode step: the new token, after the 3 positions the cache holds.
//!     let params = AttnParams::with_past(1, 1, vec![prompt.len()]);
//!     let logits = model.forward(&s, &[next], &params, Some(&mut cache), &mut ws)?;
//!     let after = argmax(&logits.f32_values()?);
//!     println!("{prompt:?} → {next} → {after}");
//!     Ok(())
//! }
//!
//! fn argmax(v: &[f32]) -> u32 {
//!     (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap_or(0) as u32
//! }
//! ```

// Kernel-style functions take many plain arguments (pointers, sizes, settings) by design.
#![allow(clippy::too_many_arguments)]
#![warn(missing_docs)]

pub mod arch;
pub mod cache;
pub mod capi;
pub mod cpu;
pub mod error;
pub mod kv_quant;
pub mod layers;
pub mod limits;
pub mod model;
pub mod ops;
pub mod quant;
pub mod stream;
pub mod tensor;
pub mod vocab;
pub mod weights;
pub mod workspace;

pub use error::{Error, Result};
pub use stream::Stream;
pub use tensor::{DType, Device, HostData, Tensor};
pub use weights::Weights;

#[cfg(feature = "cuda")]
pub mod cuda;

pub use arch::ArchParams;
pub use cache::KvCache;
pub use kv_quant::{KvCacheMode, PagedTable};
pub use layers::parallel_decoder::{Intermediates, ParallelDecoder};
pub use layers::params::AttnParams;
pub use model::stack::{Model, ModelOutput};
pub use workspace::Workspace;
#[cfg(feature = "cuda")]
pub use {layers::graph::LayerGraph, model::graph::ModelGraph};

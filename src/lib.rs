//! paradec: the parallel-residual transformer decoder block (`x + Attn(norm(x)) + Mlp(norm(x))`)
//! of GPT-J, GPT-NeoX, Phi, Falcon, Cohere and Cohere2, with a CPU reference path that matches
//! HF transformers and (feature `cuda`) CUDA kernels.

// Kernel-style functions take many plain arguments (pointers, sizes, settings) by design.
#![allow(clippy::too_many_arguments)]

pub mod arch;
pub mod cache;
pub mod capi;
pub mod cpu;
pub mod error;
pub mod layers;
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
pub use layers::parallel_decoder::{Intermediates, ParallelDecoder};
pub use layers::params::AttnParams;
pub use model::stack::{Model, ModelOutput};
pub use workspace::Workspace;

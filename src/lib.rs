//! paradec: the parallel-residual transformer decoder block (`x + Attn(norm(x)) + Mlp(norm(x))`)
//! of GPT-J, GPT-NeoX, Phi, Falcon, Cohere and Cohere2, with a CPU reference path that matches
//! HF transformers and (feature `cuda`) CUDA kernels.

pub mod error;
pub mod tensor;
pub mod model;
pub mod quant;

pub use error::{Error, Result};
pub use model::weights::Weights;
pub use tensor::{DType, Device, HostData, Tensor};

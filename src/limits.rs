//! Upper bounds on every size, count and index paradec reads from a file (config.json,
//! quantization settings, safetensors headers, PEFT adapters), checked before anything is
//! allocated from them. A value over its bound is refused with `Error::BadFormat` naming the
//! field, the value and the bound, so a hostile or corrupt file cannot make a load abort or
//! balloon memory.
//!
//! The bounds are generous: several times the largest public checkpoint of each supported
//! family (Falcon-180B: hidden 14848, 232 heads, 80 layers; GPT-NeoX-20B: hidden 6144, 44 layers;
//! Cohere Command R+ / Command A: hidden 12288, 64 layers, vocabulary 256000, 131072 positions).
//!
//! | bound | value | applies to |
//! |---|---|---|
//! | [`LAYERS`] | 1024 | `num_hidden_layers` / `n_layer`, `sliding_window_pattern` |
//! | [`HIDDEN`] | 65536 | `hidden_size` / `n_embd` |
//! | [`HEADS`] | 1024 | `num_attention_heads` / `n_head`, `num_key_value_heads` / `num_kv_heads` |
//! | [`HEAD_DIM`] | 1024 | `head_dim`, `rotary_dim` |
//! | [`ATTN_WIDTH`] | 262144 | (heads + 2 · kv heads) · head_dim, derived |
//! | [`INTERMEDIATE`] | 524288 | `intermediate_size`, `n_inner`, `ffn_hidden_size` |
//! | [`VOCAB`] | 2097152 | `vocab_size` |
//! | [`POSITIONS`] | 16777216 | `max_position_embeddings` / `n_positions`, `original_max_position_embeddings`, `sliding_window` |
//! | [`SMALL_COUNT`] | 16 | `num_ln_in_parallel_attn` |
//! | [`GROUP_SIZE`] | 1048576 | GPTQ `group_size` |
//! | [`LORA_RANK`] | 16384 | LoRA `r` |
//! | [`TENSOR_RANK`] | 8 | dimensions of one safetensors tensor |
//! | [`TENSOR_ELEMENTS`] | 2^40 | product of a tensor's dimensions, zero dimensions counted as 1 |
//!
//! Other integers a file carries (tensor data sizes, GPTQ/EXL2 packed rows, group tables) are
//! bounded by the bytes of the file itself and checked against these sizes when loaded; the
//! buffers decoded from a file are reserved fallibly ([`try_collect`], [`try_filled`]), so a
//! file larger than memory gives `Error::OutOfMemory` instead of an abort.

use crate::{Error, Result};

/// Decoder layers (and `sliding_window_pattern`).
pub const LAYERS: usize = 1024;
/// Hidden size.
pub const HIDDEN: usize = 65_536;
/// Attention heads, and KV heads.
pub const HEADS: usize = 1024;
/// Features per head (`head_dim`, derived or given; `rotary_dim`).
pub const HEAD_DIM: usize = 1024;
/// Output features of the q/k/v projections together, (heads + 2 · kv heads) · head_dim.
pub const ATTN_WIDTH: usize = 1 << 18;
/// MLP width.
pub const INTERMEDIATE: usize = 1 << 19;
/// Vocabulary size.
pub const VOCAB: usize = 1 << 21;
/// Positions (`max_position_embeddings`, the rope's original length, `sliding_window`).
pub const POSITIONS: usize = 1 << 24;
/// Small structural counts (`num_ln_in_parallel_attn`).
pub const SMALL_COUNT: usize = 16;
/// GPTQ rows per group.
pub const GROUP_SIZE: usize = 1 << 20;
/// LoRA rank `r`.
pub const LORA_RANK: usize = 1 << 14;
/// Dimensions of one tensor in a safetensors header.
pub const TENSOR_RANK: usize = 8;
/// Product of a tensor's dimensions, zero dimensions counted as 1.
pub const TENSOR_ELEMENTS: usize = 1 << 40;

/// The bound of every integer field of config.json that paradec reads.
pub const CONFIG_FIELDS: &[(&str, usize)] = &[
    ("num_hidden_layers", LAYERS),
    ("n_layer", LAYERS),
    ("sliding_window_pattern", LAYERS),
    ("hidden_size", HIDDEN),
    ("n_embd", HIDDEN),
    ("num_attention_heads", HEADS),
    ("n_head", HEADS),
    ("num_key_value_heads", HEADS),
    ("num_kv_heads", HEADS),
    ("head_dim", HEAD_DIM),
    ("rotary_dim", HEAD_DIM),
    ("intermediate_size", INTERMEDIATE),
    ("n_inner", INTERMEDIATE),
    ("ffn_hidden_size", INTERMEDIATE),
    ("vocab_size", VOCAB),
    ("max_position_embeddings", POSITIONS),
    ("n_positions", POSITIONS),
    ("original_max_position_embeddings", POSITIONS),
    ("sliding_window", POSITIONS),
    ("num_ln_in_parallel_attn", SMALL_COUNT),
];

/// The bound of a config.json integer field, `None` for a field paradec does not read.
pub fn config_field(key: &str) -> Option<usize> {
    CONFIG_FIELDS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|&(_, max)| max)
}

/// `value` when it is at most `max`, else `BadFormat` naming `what`, the value and the bound.
pub fn check(what: &str, value: usize, max: usize) -> Result<usize> {
    if value > max {
        return Err(Error::bad_format(format!(
            "{what} = {value} exceeds paradec's limit of {max} (see paradec::limits)"
        )));
    }
    Ok(value)
}

/// Checks a tensor shape from a file header: at most [`TENSOR_RANK`] dimensions whose product,
/// zero dimensions counted as 1, is at most [`TENSOR_ELEMENTS`] (so no product of some of its
/// dimensions can overflow).
pub fn check_shape(what: &str, shape: &[usize]) -> Result<()> {
    check(
        &format!("{what}: number of dimensions"),
        shape.len(),
        TENSOR_RANK,
    )?;
    let mut n = 1usize;
    for &d in shape {
        n = n.saturating_mul(d.max(1));
    }
    if n > TENSOR_ELEMENTS {
        return Err(Error::bad_format(format!(
            "{what}: shape {shape:?} exceeds paradec's limit of {TENSOR_ELEMENTS} elements (see paradec::limits)"
        )));
    }
    Ok(())
}

/// An empty vector with room for `n` elements, or `Error::OutOfMemory` naming `what` (for
/// buffers whose size comes from a file: a failed allocation is an error, not an abort).
pub fn try_with_capacity<T>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::OutOfMemory(format!("host: {what}: {n} elements")))?;
    Ok(v)
}

/// `n` copies of `value`, allocated fallibly (see [`try_with_capacity`]).
pub fn try_filled<T: Clone>(value: T, n: usize, what: &str) -> Result<Vec<T>> {
    let mut v = try_with_capacity(n, what)?;
    v.resize(n, value);
    Ok(v)
}

/// Collects an iterator of known length, allocated fallibly (see [`try_with_capacity`]).
pub fn try_collect<T>(it: impl ExactSizeIterator<Item = T>, what: &str) -> Result<Vec<T>> {
    let mut v = try_with_capacity(it.len(), what)?;
    v.extend(it);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_errors() {
        let e = check("config.json: vocab_size", VOCAB + 1, VOCAB).unwrap_err();
        assert!(e.to_string().contains("vocab_size = 2097153"), "{e}");
        assert!(e.to_string().contains("2097152"), "{e}");
        assert!(check_shape("t", &[0, usize::MAX]).is_err());
        assert!(check_shape("t", &[1; 9]).is_err());
        assert!(check_shape("t", &[0, 1 << 20, 1 << 20]).is_ok());
        assert_eq!(config_field("vocab_size"), Some(VOCAB));
        assert_eq!(config_field("nope"), None);
    }

    #[test]
    fn impossible_allocations_are_errors() {
        let e = try_filled(0u64, usize::MAX / 4, "t").unwrap_err();
        assert!(
            matches!(&e, Error::OutOfMemory(m) if m.contains("t:")),
            "{e}"
        );
        assert_eq!(try_collect([1, 2].into_iter(), "t").unwrap(), vec![1, 2]);
    }
}

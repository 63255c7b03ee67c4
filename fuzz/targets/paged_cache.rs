//! The paged KV cache through a whole model (the GPT-NeoX fixture, on the CPU): the input picks
//! the cache's mode, pool size and page size, then up to three forwards — batch, query length,
//! past lengths, token ids, an optional padding mask — each with a block table whose width,
//! page ids and page counts come from the input, valid or not (negative ids, ids past the
//! pool, counts past the table, lengths past a sequence's pages, two sequences writing one
//! page). Every call either returns a named error or finite logits; nothing panics.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::common::Bytes;

use paradec::{
    AttnParams, DType, Device, KvCache, KvCacheMode, Model, PagedTable, Stream, Workspace,
};

/// The fixture model, loaded once per process from the repository's fixtures (beside the main
/// crate or the fuzz crate).
fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = [
            here.join("tests/fixtures/gpt_neox"),
            here.join("../tests/fixtures/gpt_neox"),
        ]
        .into_iter()
        .find(|d| d.join("config.json").is_file())
        .expect("the GPT-NeoX fixture (tests/fixtures/gpt_neox)");
        Model::load(dir).expect("the GPT-NeoX fixture loads")
    })
}

/// One fuzz input through the code this target covers.
pub fn run(data: &[u8]) {
    let model = model();
    let mut b = Bytes::new(data);
    let modes = KvCacheMode::all();
    let mode = modes[b.u8() as usize % modes.len()].clone();
    let num_pages = 1 + b.u8() as usize % 48;
    let page_size = 1 + b.u8() as usize % 16;
    let Ok(mut cache) = KvCache::paged_for_model(
        &model.arch,
        num_pages,
        page_size,
        DType::F32,
        Device::Cpu,
        mode,
    ) else {
        return;
    };
    let (s, mut ws) = (Stream::Host, Workspace::cpu());
    let vocab = model.arch.vocab.max(1);
    for _ in 0..1 + b.u8() % 3 {
        let batch = 1 + b.u8() as usize % 3;
        let q_len = 1 + b.u8() as usize % 6;
        let past: Vec<usize> = (0..batch).map(|_| b.u8() as usize % 40).collect();
        let max_pages = 1 + b.u8() as usize % 12;
        let table: Vec<i32> = (0..batch * max_pages)
            .map(|_| b.u8() as i32 - 8) // a few negative ids, some past the pool
            .collect();
        let page_count: Vec<usize> = (0..batch)
            .map(|_| b.u8() as usize % (max_pages + 2))
            .collect();
        let ids: Vec<u32> = (0..batch * q_len)
            .map(|_| (b.u16() as usize % vocab) as u32)
            .collect();
        let mut params = AttnParams::with_past(batch, q_len, past.clone());
        if b.u8() & 1 == 1 {
            let slots = past.iter().max().copied().unwrap_or(0) + q_len;
            let mask: Vec<i64> = (0..batch * slots).map(|_| (b.u8() & 1) as i64).collect();
            match params.with_attention_mask(&mask, slots) {
                Ok(p) => params = p,
                Err(_) => continue,
            }
        }
        let table = PagedTable {
            page_size: if b.u8().is_multiple_of(8) {
                page_size + 1
            } else {
                page_size
            },
            max_pages,
            table,
            page_count,
        };
        let params = params.with_block_table(table);
        if let Ok(logits) = model.forward(&s, &ids, &params, Some(&mut cache), &mut ws) {
            let v = logits.f32_values().expect("logits are floats");
            assert!(
                v.iter().all(|x| x.is_finite()),
                "a paged forward that succeeded returned non-finite logits"
            );
        }
    }
}

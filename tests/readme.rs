//! The README's Rust program is the crate documentation's example, which `cargo test` compiles
//! and runs as a doctest: the two may not drift apart.

fn rust_block(text: &str) -> String {
    let start = text
        .find("```rust\n")
        .or_else(|| text.find("```\n"))
        .expect("a code block");
    let body = &text[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").expect("a closed code block")].to_string()
}

#[test]
fn readme_program_is_the_crate_doc_example() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let readme = &readme[readme
        .find("## Using it from Rust")
        .expect("the Rust section")..];
    let lib = std::fs::read_to_string(format!("{root}/src/lib.rs")).unwrap();
    let doc: String = lib
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| {
            format!(
                "{}\n",
                l.trim_start_matches("//!").strip_prefix(' ').unwrap_or("")
            )
        })
        .collect();
    let (a, b) = (rust_block(readme), rust_block(&doc));
    assert!(
        a.contains("fn main()"),
        "the README's program is complete:\n{a}"
    );
    assert_eq!(a, b, "README.md and src/lib.rs carry different examples");
}

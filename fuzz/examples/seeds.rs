//! Writes the valid seed inputs (`seed-*`) and the hand-made malformed ones
//! (`bad-*`) to `fuzz/corpus/<target>/`: of the targets named on the
//! command line, or of every target if none is named.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds [TARGET...]`

fn main() -> std::io::Result<()> {
    let only: Vec<String> = std::env::args().skip(1).collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, name, bytes) in veil_fuzz::seeds().into_iter().chain(veil_fuzz::malformed()) {
        if !only.is_empty() && !only.iter().any(|t| t == target) {
            continue;
        }
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(&name), &bytes)?;
        println!("{target}/{name}: {} bytes", bytes.len());
    }
    Ok(())
}

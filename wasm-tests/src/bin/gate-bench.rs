//! `gate-bench [REQUESTS]`: in-filter parse + signature + verify time of the golden PCS in the
//! wasmtime harness, as JSON on stdout (see `kakeya_wasm_tests::bench`). Needs the built module:
//! `cargo build -p kakeya-gate --target wasm32-wasip1 --profile wasm`, then
//! `cargo run --release -p kakeya-wasm-tests --bin gate-bench -- 20000`.

fn main() -> anyhow::Result<()> {
    let requests = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|e| anyhow::anyhow!("REQUESTS must be a number: {e}"))?,
        None => 20_000,
    };
    let report = kakeya_wasm_tests::bench::in_filter(requests)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

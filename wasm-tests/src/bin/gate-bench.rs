//! `gate-bench [REQUESTS]`: in-filter parse + signature + verify time of the golden PCS in the
//! wasmtime harness, as JSON on stdout (see `kakeya_wasm_tests::bench`). Needs the built module:
//! `cargo build -p kakeya-gate --target wasm32-wasip1 --profile wasm`, then
//! `cargo run --release -p kakeya-wasm-tests --bin gate-bench -- 20000`.
//! `gate-bench --tracer [REQUESTS]` runs only what the cost tracer adds (`bench::tracer_cost`).

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let tracer_only = args.first().is_some_and(|a| a == "--tracer");
    if tracer_only {
        args.remove(0);
    }
    let requests = match args.first() {
        Some(n) => n
            .parse()
            .map_err(|e| anyhow::anyhow!("REQUESTS must be a number: {e}"))?,
        None => 20_000,
    };
    let json = if tracer_only {
        let wasm = kakeya_wasm_tests::load_gate_wasm()?;
        serde_json::to_string_pretty(&kakeya_wasm_tests::bench::tracer_cost(&wasm, requests)?)?
    } else {
        serde_json::to_string_pretty(&kakeya_wasm_tests::bench::in_filter(requests)?)?
    };
    println!("{json}");
    Ok(())
}

//! Forward-pass time of the encoder by sequence length, in process CPU time as well as wall
//! time (CPU time is what to compare on a shared, loaded machine):
//!
//!     RAYON_NUM_THREADS=1 cargo run -p kakeya-microvote --example forward -- MODEL_DIR [REPEATS]
use kakeya_microvote::encoder::Encoder;
use std::time::Instant;

/// User + system CPU time of this process, in ms (`/proc/self/stat`, clock ticks of 10 ms).
fn cpu_ms() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) * 10.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: forward MODEL_DIR [REPEATS]")?;
    let repeats: usize = args.next().map_or(Ok(20), |s| s.parse())?;
    let enc = Encoder::load(std::path::Path::new(&dir))?;
    for n in [16usize, 64, 128, 256] {
        // n − 2 word pieces + [CLS] + [SEP].
        let text = vec!["word"; n - 2].join(" ");
        let _ = enc.encode(&text)?;
        let (c0, t0) = (cpu_ms(), Instant::now());
        for _ in 0..repeats {
            let _ = enc.encode(&text)?;
        }
        let wall = t0.elapsed().as_secs_f64() * 1e3 / repeats as f64;
        let cpu = (cpu_ms() - c0) / repeats as f64;
        println!("{n:>4} tokens: wall {wall:7.1} ms  cpu {cpu:7.1} ms per text");
    }
    Ok(())
}

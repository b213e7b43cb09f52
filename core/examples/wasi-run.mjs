// Runs a wasm32-wasip1 command module under Node's WASI (V8, the engine Envoy embeds), with
// this process's standard input and output: `node core/examples/wasi-run.mjs module.wasm`.
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";

const wasi = new WASI({ version: "preview1", args: process.argv.slice(2), env: {} });
const module = await WebAssembly.compile(await readFile(process.argv[2]));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);

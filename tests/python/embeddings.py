"""Embeddings through the official `openai` client, unchanged: `client.embeddings.create`
with one text and with a list, as floats and as base64 (the client's default), against the
sentence-transformers reference vectors in tests/fixtures/embeddings/reference.json.

Usage: embeddings.py BASE_URL MODEL_ID REFERENCE_JSON; prints one JSON document for the
Rust test.
"""

import json
import math
import sys

import openai

base, model, ref_path = sys.argv[1:4]
ref = json.load(open(ref_path, encoding="utf-8"))
client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)


def cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


out = {}
# The whole list at once, base64 (the client's default encoding), and as floats.
b64 = client.embeddings.create(model=model, input=ref["texts"])
flt = client.embeddings.create(model=model, input=ref["texts"], encoding_format="float")
out["cos_base64"] = [cos(d.embedding, r) for d, r in zip(b64.data, ref["embeddings"])]
out["cos_float"] = [cos(d.embedding, r) for d, r in zip(flt.data, ref["embeddings"])]
out["dims"] = sorted({len(d.embedding) for d in flt.data})
out["indices"] = [d.index for d in flt.data]
out["usage"] = [flt.usage.prompt_tokens, flt.usage.total_tokens]
out["ref_tokens"] = sum(len(i) for i in ref["token_ids"])
out["norms"] = [math.sqrt(sum(x * x for x in d.embedding)) for d in flt.data]
# One text alone gives the vector it gives in a batch (within float error).
one = client.embeddings.create(model=model, input=ref["texts"][3], encoding_format="float")
out["alone_vs_batch"] = cos(one.data[0].embedding, flt.data[3].embedding)
out["model"] = flt.model
print(json.dumps(out))

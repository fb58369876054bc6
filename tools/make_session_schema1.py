"""Writes tests/fixtures/session-schema1.safetensors: a tiny session file exactly as lvlmscope
wrote them before image regions (schema `lvlmscope.session/1`: no `regions` key), so tests can
check that such files still open. Needs numpy and safetensors only."""

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

N, T, L, H = 6, 3, 2, 2
S = N + T - 1

attn = np.zeros((T, L, H, S), dtype=np.float32)
for t in range(T):
    for l in range(L):
        for h in range(H):
            q = N - 1 + t
            attn[t, l, h, : q + 1] = (1 + np.arange(q + 1) + l + h) / 100.0

manifest = {
    "schema": "lvlmscope.session/1",
    "model": {
        "path": "tests/fixtures/tiny-llava-gqa",
        "architecture": "LlavaForConditionalGeneration",
        "text_layers": L,
        "text_heads": H,
        "vision_layers": 1,
        "vision_heads": 1,
        "image_grid": [2, 2],
    },
    "prompt": "What is it?",
    "image": {"path": "image.png", "mode": "default", "original_size": [48, 36]},
    "generation": {"max_new_tokens": 3, "temperature": 0.0, "top_p": 1.0, "seed": 0},
    "tokens": {
        "input": ["<s>", "<image>", "<image>", "<image>", "<image>", "\u2581What"],
        "output": ["\u2581a", "\u2581cat", "</s>"],
    },
    "image_span": [1, 4],
    "relevancy_tokens": [],
    "causal": None,
    "timings": {"prefill": 0.5},
}

tensors = {
    "input_ids": np.array([1, 3, 3, 3, 3, 40], dtype=np.int64),
    "output_ids": np.array([7, 8, 2], dtype=np.int64),
    "pixel_values": (np.arange(12, dtype=np.float32) - 6.0).reshape(3, 2, 2),
    "attn.gen": attn,
}
out = Path(__file__).resolve().parent.parent / "tests/fixtures/session-schema1.safetensors"
save_file(tensors, str(out), metadata={"lvlmscope": json.dumps(manifest)})
print(out, out.stat().st_size, "bytes")

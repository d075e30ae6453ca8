#!/usr/bin/env python3
# llama_reference.py: an independent Llama forward pass in plain PyTorch (float64) with its own small
# GGUF reader; the oracle for lumen's logits in tests/test_llama_logits.cpp. Run with /usr/bin/python3.
"""Usage: llama_reference.py MODEL.gguf OUT.bin ID [ID ...]

Runs the token ids through the `llama` model in MODEL.gguf (F32 or F16 tensors) and writes the
logits after every position to OUT.bin as float32, n_tokens x n_vocab, row-major.
"""

import math
import struct
import sys

import numpy as np
import torch

# --- GGUF -----------------------------------------------------------------------------------

GGUF_MAGIC = 0x46554747  # "GGUF" as a little-endian u32
SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
TENSOR_TYPES = {0: np.float32, 1: np.float16}  # ggml type id -> element type


class Reader:
    """Reads little-endian values from bytes, front to back."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def unpack(self, fmt):
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self):
        n = self.unpack("Q")
        s = self.data[self.pos:self.pos + n].decode("utf-8")
        self.pos += n
        return s

    def value(self, type_id):
        if type_id in SCALAR_FORMATS:
            return self.unpack(SCALAR_FORMATS[type_id])
        if type_id == STRING:
            return self.string()
        if type_id == ARRAY:
            element_type = self.unpack("I")
            n = self.unpack("Q")
            return [self.value(element_type) for _ in range(n)]
        raise ValueError(f"unknown GGUF value type {type_id}")


def read_gguf(path):
    """Returns (metadata dict, {tensor name: float64 torch tensor}). A tensor with ne = {cols, rows}
    becomes an array of shape (rows, cols): ne[0] is the fastest-moving dimension."""
    with open(path, "rb") as f:
        data = f.read()
    r = Reader(data)
    if r.unpack("I") != GGUF_MAGIC:
        raise ValueError(f"{path}: not a GGUF file")
    version = r.unpack("I")
    if version not in (2, 3):
        raise ValueError(f"{path}: unsupported GGUF version {version}")
    n_tensors = r.unpack("Q")
    n_kv = r.unpack("Q")
    metadata = {}
    for _ in range(n_kv):
        key = r.string()
        metadata[key] = r.value(r.unpack("I"))
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.unpack("I")
        ne = [r.unpack("Q") for _ in range(n_dims)]
        type_id = r.unpack("I")
        offset = r.unpack("Q")
        infos.append((name, ne, type_id, offset))
    alignment = metadata.get("general.alignment", 32)
    data_start = (r.pos + alignment - 1) // alignment * alignment
    tensors = {}
    for name, ne, type_id, offset in infos:
        if type_id not in TENSOR_TYPES:
            raise ValueError(f"{path}: tensor '{name}' has type {type_id}; only F32 and F16 are read here")
        count = math.prod(ne)
        values = np.frombuffer(data, dtype=TENSOR_TYPES[type_id], count=count, offset=data_start + offset)
        tensors[name] = torch.from_numpy(values.astype(np.float64).reshape(tuple(reversed(ne))))
    return metadata, tensors


# --- the model ------------------------------------------------------------------------------

def rmsnorm(x, weight, eps):
    # x / sqrt(mean(x^2) + eps) * weight, row by row
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * weight


def rope(x, n_heads, head_dim, rope_dims, base):
    """Rotates adjacent pairs (2i, 2i+1) of the first rope_dims of every head of x (T, n_heads * head_dim)
    by theta_i = pos * base^(-2i / rope_dims); the dims beyond rope_dims are left as they are."""
    T = x.shape[0]
    x = x.reshape(T, n_heads, head_dim).clone()
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    i = torch.arange(rope_dims // 2, dtype=torch.float64)[None, :]
    theta = pos * base ** (-2.0 * i / rope_dims)          # (T, rope_dims / 2)
    cos, sin = torch.cos(theta)[:, None, :], torch.sin(theta)[:, None, :]
    even = x[:, :, 0:rope_dims:2].clone()
    odd = x[:, :, 1:rope_dims:2].clone()
    x[:, :, 0:rope_dims:2] = even * cos - odd * sin
    x[:, :, 1:rope_dims:2] = even * sin + odd * cos
    return x.reshape(T, n_heads * head_dim)


def attention(q, k, v, n_heads, n_kv_heads, head_dim):
    """Causal softmax attention; query head h reads key/value head h // (n_heads / n_kv_heads)."""
    T = q.shape[0]
    group = n_heads // n_kv_heads
    qh = q.reshape(T, n_heads, head_dim).transpose(0, 1)                                   # (H, T, hd)
    kh = k.reshape(T, n_kv_heads, head_dim).transpose(0, 1).repeat_interleave(group, dim=0)  # (H, T, hd)
    vh = v.reshape(T, n_kv_heads, head_dim).transpose(0, 1).repeat_interleave(group, dim=0)
    scores = qh @ kh.transpose(1, 2) / math.sqrt(head_dim)                                  # (H, T, T)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(future, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ vh                                                 # (H, T, hd)
    return out.transpose(0, 1).reshape(T, n_heads * head_dim)


def forward(metadata, w, tokens):
    arch = metadata["general.architecture"]
    if arch != "llama":
        raise ValueError(f"architecture {arch!r} is not llama")
    dim = metadata["llama.embedding_length"]
    n_layers = metadata["llama.block_count"]
    n_heads = metadata["llama.attention.head_count"]
    n_kv_heads = metadata.get("llama.attention.head_count_kv", n_heads)
    head_dim = dim // n_heads
    rope_dims = metadata.get("llama.rope.dimension_count", head_dim)
    base = float(metadata.get("llama.rope.freq_base", 10000.0))
    eps = float(metadata.get("llama.attention.layer_norm_rms_epsilon", 1e-5))

    x = w["token_embd.weight"][tokens]                                   # (T, dim)
    for l in range(n_layers):
        p = f"blk.{l}."
        # x = x + wo(attention(rope(wq h), rope(wk h), wv h)), h = rmsnorm(x)
        h = rmsnorm(x, w[p + "attn_norm.weight"], eps)
        q = rope(h @ w[p + "attn_q.weight"].T, n_heads, head_dim, rope_dims, base)
        k = rope(h @ w[p + "attn_k.weight"].T, n_kv_heads, head_dim, rope_dims, base)
        v = h @ w[p + "attn_v.weight"].T
        x = x + attention(q, k, v, n_heads, n_kv_heads, head_dim) @ w[p + "attn_output.weight"].T
        # x = x + w2(silu(w1 h) * w3 h), h = rmsnorm(x)
        h = rmsnorm(x, w[p + "ffn_norm.weight"], eps)
        gate = torch.nn.functional.silu(h @ w[p + "ffn_gate.weight"].T)
        x = x + (gate * (h @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T
    output = w.get("output.weight", w["token_embd.weight"])             # tied when absent
    return rmsnorm(x, w["output_norm.weight"], eps) @ output.T           # (T, n_vocab)


def main(argv):
    if len(argv) < 4:
        sys.stderr.write(__doc__)
        return 2
    metadata, weights = read_gguf(argv[1])
    tokens = torch.tensor([int(t) for t in argv[3:]], dtype=torch.long)
    with torch.no_grad():
        logits = forward(metadata, weights, tokens)
    np.ascontiguousarray(logits.numpy(), dtype=np.float32).tofile(argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

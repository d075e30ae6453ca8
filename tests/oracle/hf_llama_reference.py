#!/usr/bin/env python3
# hf_llama_reference.py: writes random-weight Llama checkpoints in Hugging Face layout (config.json,
# safetensors written here, tokenizer files) and the logits of a plain PyTorch implementation of the
# Hugging Face Llama forward pass (rotate-half RoPE), the oracle for tests/test_convert_hf.cpp.
# Run with /usr/bin/python3 (Debian's torch and numpy); no transformers or safetensors package needed.
"""Usage: hf_llama_reference.py OUT_DIR SPM_MODEL [SPM_MODEL_2]

For every variant V (see VARIANTS) writes OUT_DIR/V/: config.json, model.safetensors (or shards and
model.safetensors.index.json), tokenizer.model (a copy of SPM_MODEL) or a tokenizer.json made from it,
tokenizer_config.json, tokens.txt (the token ids, space-separated) and reference.bin (the logits after
every token, float32, n_tokens x vocab_size, row-major). With SPM_MODEL_2 (e.g. Llama 2's tokenizer.model)
also writes OUT_DIR/tokenizer_json_2/ with only tokenizer.json and tokenizer_config.json made from it.
"""

import json
import math
import os
import shutil
import struct
import sys

import numpy as np
import sentencepiece
import torch

SPACE = "\u2581"
TOKENS = [1, 72, 259, 104, 511, 3, 260, 42, 200, 104, 258, 510, 300, 17]

# name: hyperparameters and how the folder is laid out
VARIANTS = {
    "llama_f32_gqa_untied": dict(arch="LlamaForCausalLM", dtype="float32", hidden=64, heads=8, kv_heads=2,
                                 inter=96, layers=2, theta=10000.0, eps=1e-5, tied=False, tokenizer="model"),
    "llama_f16_tied_tokjson": dict(arch="LlamaForCausalLM", dtype="float16", hidden=48, heads=4, kv_heads=None,
                                   inter=80, layers=2, theta=500000.0, eps=1e-6, tied=True, tokenizer="json"),
    "llama_bf16_mqa_sharded": dict(arch="LlamaForCausalLM", dtype="bfloat16", hidden=64, heads=4, kv_heads=1,
                                   inter=128, layers=3, theta=10000.0, eps=1e-5, tied=False, tokenizer="model",
                                   shards=3),
    "mistral_f32": dict(arch="MistralForCausalLM", dtype="float32", hidden=32, heads=4, kv_heads=2, inter=72,
                        layers=2, theta=1000000.0, eps=1e-5, tied=False, tokenizer="model", sliding_window=4096,
                        head_dim_key=True, inv_freq=True),
    # rows of 256 and 512: every matrix fills Q4_K / Q6_K super-blocks
    "llama_f32_wide": dict(arch="LlamaForCausalLM", dtype="float32", hidden=256, heads=4, kv_heads=2, inter=512,
                           layers=1, theta=10000.0, eps=1e-5, tied=False, tokenizer="model"),
}
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# --- safetensors ------------------------------------------------------------------------------

ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: the same 16 bits as int16
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_safetensors(path, tensors):
    """tensors: list of (name, torch tensor). Header JSON padded with spaces to a multiple of 8."""
    header = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, t in tensors:
        data = tensor_bytes(t)
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


def write_checkpoint(folder, tensors, shards):
    if shards <= 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), tensors)
        return
    per_shard = math.ceil(len(tensors) / shards)
    weight_map = {}
    for s in range(shards):
        part = tensors[s * per_shard:(s + 1) * per_shard]
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(os.path.join(folder, file), part)
        weight_map.update({name: file for name, _ in part})
    total = sum(len(tensor_bytes(t)) for _, t in tensors)
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


# --- random weights in Hugging Face names ----------------------------------------------------

def random_weights(v, vocab, gen):
    dim, hd = v["hidden"], v["hidden"] // v["heads"]
    kv = v["kv_heads"] or v["heads"]
    dt = TORCH_DTYPES[v["dtype"]]

    def matrix(rows, cols, scale=1.0):
        return (torch.randn(rows, cols, generator=gen, dtype=torch.float64) * scale / math.sqrt(cols)).to(dt)

    def norm():
        return (0.7 + 0.6 * torch.rand(dim, generator=gen, dtype=torch.float64)).to(dt)

    w = [("model.embed_tokens.weight", matrix(vocab, dim, math.sqrt(dim)))]
    for l in range(v["layers"]):
        p = f"model.layers.{l}."
        w += [(p + "input_layernorm.weight", norm()),
              (p + "self_attn.q_proj.weight", matrix(v["heads"] * hd, dim, 2.0)),
              (p + "self_attn.k_proj.weight", matrix(kv * hd, dim, 2.0)),
              (p + "self_attn.v_proj.weight", matrix(kv * hd, dim)),
              (p + "self_attn.o_proj.weight", matrix(dim, v["heads"] * hd)),
              (p + "post_attention_layernorm.weight", norm()),
              (p + "mlp.gate_proj.weight", matrix(v["inter"], dim)),
              (p + "mlp.up_proj.weight", matrix(v["inter"], dim)),
              (p + "mlp.down_proj.weight", matrix(dim, v["inter"]))]
        if v.get("inv_freq"):  # old checkpoints store this buffer; converters skip it
            w.append((p + "self_attn.rotary_emb.inv_freq",
                      1.0 / (v["theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))))
    w.append(("model.norm.weight", norm()))
    if not v["tied"]:
        w.append(("lm_head.weight", matrix(vocab, dim)))
    return w


def config_json(v, vocab):
    c = {"architectures": [v["arch"]], "model_type": "mistral" if v["arch"].startswith("Mistral") else "llama",
         "hidden_size": v["hidden"], "intermediate_size": v["inter"], "num_hidden_layers": v["layers"],
         "num_attention_heads": v["heads"], "hidden_act": "silu", "max_position_embeddings": 256,
         "rms_norm_eps": v["eps"], "rope_theta": v["theta"], "rope_scaling": None,
         "tie_word_embeddings": v["tied"], "torch_dtype": v["dtype"], "vocab_size": vocab,
         "bos_token_id": 1, "eos_token_id": 2, "attention_bias": False, "transformers_version": "4.40.0"}
    if v["kv_heads"] is not None:
        c["num_key_value_heads"] = v["kv_heads"]
    if "sliding_window" in v:
        c["sliding_window"] = v["sliding_window"]
    if v.get("head_dim_key"):
        c["head_dim"] = v["hidden"] // v["heads"]
    return c


# --- tokenizer files ---------------------------------------------------------------------------

def special_token(i, piece):
    return {"id": i, "content": piece, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def tokenizer_json(sp):
    """A tokenizer.json as transformers' LlamaConverter writes it for a SentencePiece BPE model; the merges
    are made as its SentencePieceExtractor makes them: every split of a piece into two pieces, ordered by
    (left id, right id) within a piece, then stably by the piece's score, highest first."""
    vocab = {sp.id_to_piece(i): i for i in range(sp.vocab_size())}
    merges = []
    for piece, i in vocab.items():
        local = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges += [(left, right, sp.get_score(i)) for left, right in local]
    merges.sort(key=lambda m: m[2], reverse=True)
    specials = [i for i in range(sp.vocab_size()) if sp.is_control(i) or sp.is_unknown(i)]
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special_token(i, sp.id_to_piece(i)) for i in specials],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                  "vocab": vocab, "merges": [f"{left} {right}" for left, right, _ in merges]},
    }


def tokenizer_config(sp):
    specials = [i for i in range(sp.vocab_size()) if sp.is_control(i) or sp.is_unknown(i)]
    decoder = {str(i): {k: val for k, val in special_token(i, sp.id_to_piece(i)).items() if k != "id"} for i in specials}
    return {"add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": decoder, "bos_token": "<s>",
            "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None, "legacy": False,
            "tokenizer_class": "LlamaTokenizer", "model_max_length": 256}


# --- the Hugging Face Llama forward pass, in float64 ------------------------------------------

def rms_norm(x, weight, eps):
    # LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * weight
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_cos_sin(n_tokens, head_dim, theta):
    # LlamaRotaryEmbedding: inv_freq[i] = theta^(-2i/d); emb = cat(freqs, freqs)
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    freqs = torch.outer(torch.arange(n_tokens, dtype=torch.float64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()  # (T, head_dim)


def attention(x, w, p, v, cos, sin):
    T, dim = x.shape
    n_heads, n_kv = v["heads"], v["kv_heads"] or v["heads"]
    hd = dim // n_heads
    q = (x @ w[p + "self_attn.q_proj.weight"].T).view(T, n_heads, hd).transpose(0, 1)   # (H, T, hd)
    k = (x @ w[p + "self_attn.k_proj.weight"].T).view(T, n_kv, hd).transpose(0, 1)      # (KV, T, hd)
    val = (x @ w[p + "self_attn.v_proj.weight"].T).view(T, n_kv, hd).transpose(0, 1)
    # apply_rotary_pos_emb: q * cos + rotate_half(q) * sin
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    k = k.repeat_interleave(n_heads // n_kv, dim=0)  # repeat_kv
    val = val.repeat_interleave(n_heads // n_kv, dim=0)
    scores = q @ k.transpose(1, 2) / math.sqrt(hd)
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1), float("-inf"))
    out = torch.softmax(scores, dim=-1) @ val                                              # (H, T, hd)
    return out.transpose(0, 1).reshape(T, n_heads * hd) @ w[p + "self_attn.o_proj.weight"].T


def forward(v, weights, tokens):
    w = {name: t.to(torch.float64) for name, t in weights}
    x = w["model.embed_tokens.weight"][torch.tensor(tokens)]
    cos, sin = rope_cos_sin(len(tokens), v["hidden"] // v["heads"], v["theta"])
    for l in range(v["layers"]):
        p = f"model.layers.{l}."
        x = x + attention(rms_norm(x, w[p + "input_layernorm.weight"], v["eps"]), w, p, v, cos, sin)
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], v["eps"])
        # LlamaMLP: down_proj(silu(gate_proj(h)) * up_proj(h))
        x = x + (torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)) \
            @ w[p + "mlp.down_proj.weight"].T
    head = w["model.embed_tokens.weight"] if v["tied"] else w["lm_head.weight"]
    return rms_norm(x, w["model.norm.weight"], v["eps"]) @ head.T


def write_variant(root, name, v, sp, spm_path, seed):
    folder = os.path.join(root, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    vocab = sp.vocab_size()
    weights = random_weights(v, vocab, torch.Generator().manual_seed(seed))
    write_checkpoint(folder, weights, v.get("shards", 1))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config_json(v, vocab), f, indent=2)
    if v["tokenizer"] == "model":
        shutil.copyfile(spm_path, os.path.join(folder, "tokenizer.model"))
    else:
        with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tokenizer_json(sp), f, ensure_ascii=False, indent=1)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(sp), f, indent=2)
    with open(os.path.join(folder, "tokens.txt"), "w") as f:
        f.write(" ".join(str(t) for t in TOKENS) + "\n")
    with torch.no_grad():
        logits = forward(v, weights, TOKENS)
    np.ascontiguousarray(logits.numpy(), dtype=np.float32).tofile(os.path.join(folder, "reference.bin"))


def write_tokenizer_only(folder, spm_path):
    sp = sentencepiece.SentencePieceProcessor(model_file=spm_path)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(sp), f, ensure_ascii=False)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(sp), f, indent=2)


def main(argv):
    if len(argv) not in (3, 4):
        sys.stderr.write(__doc__)
        return 2
    root, spm_path = argv[1], argv[2]
    sp = sentencepiece.SentencePieceProcessor(model_file=spm_path)
    for seed, (name, v) in enumerate(VARIANTS.items(), start=101):
        write_variant(root, name, v, sp, spm_path, seed)
    if len(argv) == 4:
        write_tokenizer_only(os.path.join(root, "tokenizer_json_2"), argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

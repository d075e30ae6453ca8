#!/usr/bin/env python3
"""Train lumen's demo model: a small Llama on the King James Bible, written as a Hugging Face folder.

    make demo-model            # the whole pipeline, as recorded in models/README.md
    /usr/bin/python3 models/train_demo.py --help

Steps, each a section below:
  1. text       the KJV from Debian's bible-kjv (`bible` reads bible-kjv-text's compressed data),
                verse references stripped; every 50th chapter is held out for validation
  2. tokenizer  SentencePiece BPE trained by Debian's spm_train, with Llama-2's conventions
  3. model      a plain PyTorch Llama (RMSNorm, rotate-half RoPE, SwiGLU, GQA, tied embeddings),
                written to mirror transformers' modeling_llama.py line by line
  4. training   AdamW, linear warmup then cosine decay, batches of random windows
  5. output     config.json, model.safetensors (our own writer), tokenizer.model,
                tokenizer_config.json: the folder `lumen convert` turns into GGUF
  6. samples    greedy and temperature-0.8 text from the PyTorch model, and reference.json
                (prompt ids, greedy ids, last-position logits) to compare lumen against

Needs only Debian packages: python3-torch, python3-numpy, python3-sentencepiece, sentencepiece
(spm_train), bible-kjv and bible-kjv-text. Run it with /usr/bin/python3 (the Debian interpreter).
"""

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import time
from collections import OrderedDict

# Threads that wait for each other must sleep, not spin: on a busy machine a spinning OpenMP
# barrier made training ten times slower. Set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


def log(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------------------
# 1. text: the King James Bible as plain prose, split into train and validation


def read_kjv():
    """Returns [(book, chapter, [verse text, ...]), ...] in canonical order.

    `bible -f` turns pretty-printing off: one verse per line, "Ge1:1 In the beginning ...".
    The reference is dropped; the text has no other markup (checked below)."""
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, check=True).stdout
    chapters = []
    for line in out.splitlines():
        if not line.strip():
            continue
        ref, _, text = line.partition(" ")
        book = ref.rstrip("0123456789:")
        chapter = ref[len(book):].split(":")[0]
        assert book and chapter.isdigit() and text, f"unexpected line from bible: {line!r}"
        assert not any(c.isdigit() or c in "[]{}<>#" for c in text), f"markup left in: {line!r}"
        if not chapters or chapters[-1][:2] != (book, int(chapter)):
            chapters.append((book, int(chapter), []))
        chapters[-1][2].append(text.strip())
    assert len(chapters) == 1189, f"expected the 1189 chapters of the KJV, got {len(chapters)}"
    return chapters


def split_chapters(chapters, every=50):
    """Every `every`-th chapter (the 50th, 100th, ...) goes to validation: ~2% of the text, drawn
    from the whole Bible rather than from its last book."""
    train = [c for i, c in enumerate(chapters) if (i + 1) % every != 0]
    val = [c for i, c in enumerate(chapters) if (i + 1) % every == 0]
    return train, val


def write_text(path, chapters):
    """One verse per line; chapters separated by an empty line. This is spm_train's input and
    the text a user can hand to `lumen perplexity -f`."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join("\n".join(verses) for _, _, verses in chapters) + "\n")


# ----------------------------------------------------------------------------
# 2. tokenizer: SentencePiece BPE with Llama-2's conventions


def train_tokenizer(text_path, prefix, vocab_size, threads):
    cmd = ["spm_train", f"--input={text_path}", f"--model_prefix={prefix}",
           "--model_type=bpe", f"--vocab_size={vocab_size}",
           "--byte_fallback=true", "--normalization_rule_name=identity",
           "--add_dummy_prefix=true", "--remove_extra_whitespaces=false",
           "--split_digits=true", "--character_coverage=1.0",
           "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=-1",
           "--max_sentence_length=4096", f"--num_threads={threads}", "--minloglevel=1"]
    log("tokenizer: " + " ".join(cmd))
    subprocess.run(cmd, check=True)


def encode_chapters(sp, chapters):
    """Each chapter is one document: <s> verse\\nverse\\n...verse </s>. The chapter is encoded as
    one string, exactly as SentencePiece (and lumen) encode a prompt that contains newlines: the
    dummy prefix only at the start, the newline through byte fallback (<0x0A>)."""
    ids = []
    for _, _, verses in chapters:
        ids.append(sp.bos_id())
        ids.extend(sp.encode("\n".join(verses)))
        ids.append(sp.eos_id())
    return np.array(ids, dtype=np.int64)


# ----------------------------------------------------------------------------
# 3. model: Llama as in transformers' modeling_llama.py (parameter names are HF's)


class Config:
    def __init__(self, a, vocab_size):
        self.vocab_size = vocab_size
        self.dim = a.dim                    # hidden_size
        self.n_layers = a.layers            # num_hidden_layers
        self.n_heads = a.heads              # num_attention_heads
        self.n_kv_heads = a.kv_heads        # num_key_value_heads
        self.hidden = a.hidden              # intermediate_size
        self.ctx = a.ctx                    # max_position_embeddings
        self.eps = 1e-5                     # rms_norm_eps
        self.theta = 10000.0                # rope_theta
        self.head_dim = a.dim // a.heads
        assert a.dim % a.heads == 0 and a.heads % a.kv_heads == 0


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):  # x (B,T,dim) -> (B,T,dim)
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rope_tables(c, T):
    """cos, sin (T, head_dim) for HF's rotate-half layout: frequency i acts on the pair
    (i, i + head_dim/2). `lumen convert` permutes q/k rows into GGUF's adjacent-pair layout."""
    inv_freq = 1.0 / (c.theta ** (torch.arange(0, c.head_dim, 2).float() / c.head_dim))
    freqs = torch.outer(torch.arange(T).float(), inv_freq)   # (T, head_dim/2)
    emb = torch.cat((freqs, freqs), dim=-1)                  # (T, head_dim)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.q_proj = nn.Linear(c.dim, c.n_heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.n_heads * c.head_dim, c.dim, bias=False)

    def forward(self, x, cos, sin, mask):  # x (B,T,dim) -> (B,T,dim)
        c, (B, T, _) = self.c, x.shape
        q = self.q_proj(x).view(B, T, c.n_heads, c.head_dim).transpose(1, 2)     # (B,H,T,hd)
        k = self.k_proj(x).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)  # (B,Hkv,T,hd)
        v = self.v_proj(x).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin                                        # apply_rotary_pos_emb
        k = k * cos + rotate_half(k) * sin
        rep = c.n_heads // c.n_kv_heads                                           # repeat_kv: query head h
        if rep > 1:                                                               # reads kv head h // rep
            k = k[:, :, None].expand(B, c.n_kv_heads, rep, T, c.head_dim).reshape(B, c.n_heads, T, c.head_dim)
            v = v[:, :, None].expand(B, c.n_kv_heads, rep, T, c.head_dim).reshape(B, c.n_heads, T, c.head_dim)
        att = (q * (1.0 / math.sqrt(c.head_dim))) @ k.transpose(-2, -1) + mask   # (B,H,T,T)
        y = F.softmax(att, dim=-1, dtype=torch.float32) @ v                       # (B,H,T,hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, c.n_heads * c.head_dim))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.dim, c.hidden, bias=False)
        self.up_proj = nn.Linear(c.dim, c.hidden, bias=False)
        self.down_proj = nn.Linear(c.hidden, c.dim, bias=False)

    def forward(self, x):  # down_proj(silu(gate_proj(x)) * up_proj(x))
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.dim, c.eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.dim, c.eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):  # HF's LlamaModel, so that state_dict names read "model.layers.N..."
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.eps)


class Llama(nn.Module):  # LlamaForCausalLM with tie_word_embeddings: lm_head is embed_tokens
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Body(c)
        cos, sin = rope_tables(c, c.ctx)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * c.n_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx):  # idx (B,T) token ids -> logits (B,T,vocab)
        T = idx.shape[1]
        mask = torch.full((T, T), float("-inf"), device=idx.device).triu(1)
        x = self.model.embed_tokens(idx)
        for layer in self.model.layers:
            x = layer(x, self.cos[:T], self.sin[:T], mask)
        return F.linear(self.model.norm(x), self.model.embed_tokens.weight)


# ----------------------------------------------------------------------------
# 4. training


def get_batch(data, batch, ctx, gen):
    ix = torch.randint(len(data) - ctx - 1, (batch,), generator=gen)
    x = torch.stack([torch.from_numpy(data[i: i + ctx]) for i in ix.tolist()])
    y = torch.stack([torch.from_numpy(data[i + 1: i + 1 + ctx]) for i in ix.tolist()])
    return x, y


def autocast(bf16):
    """bfloat16 matmuls (fp32 weights, fp32 softmax and loss) when asked: on CPUs with AMX or
    AVX512-BF16, oneDNN runs them several times faster than fp32 BLAS."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


@torch.no_grad()
def evaluate(model, data, ctx, max_windows=None, batch=16, bf16=False):
    """Mean next-token loss over consecutive non-overlapping windows of `data`."""
    model.eval()
    n = (len(data) - 1) // ctx
    if max_windows:
        n = min(n, max_windows)
    total, count = 0.0, 0
    for s in range(0, n, batch):
        rows = range(s, min(n, s + batch))
        x = torch.stack([torch.from_numpy(data[r * ctx: r * ctx + ctx]) for r in rows])
        y = torch.stack([torch.from_numpy(data[r * ctx + 1: r * ctx + ctx + 1]) for r in rows])
        with autocast(bf16):
            logits = model(x).float()
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
        total, count = total + loss.item(), count + y.numel()
    model.train()
    return total / count


def lr_at(step, a, progress=None):
    """Linear warmup over a.warmup steps, then cosine decay from a.lr to a.min_lr. `progress`
    (0..1 through the decay) defaults to the step count; --max-minutes may move it forward."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    if progress is None:
        progress = (step - a.warmup) / max(1, a.steps - a.warmup)
    return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def train(model, train_ids, val_ids, a):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, foreach=True)
    gen = torch.Generator().manual_seed(a.seed)
    t0, history, step = time.time(), [], 0
    while step < a.steps:
        # The schedule follows the step count, so a run is reproducible. --max-minutes is a guard
        # for a machine slower than planned: the decay then follows the clock instead and the run
        # ends early (result.json records the steps done).
        progress = (step - a.warmup) / max(1, a.steps - a.warmup)
        if a.max_minutes and step >= a.warmup:
            progress = max(progress, (time.time() - t0) / (60 * a.max_minutes))
        lr = lr_at(step, a, progress)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = get_batch(train_ids, a.batch, a.ctx, gen)
        with autocast(a.bf16):
            logits = model(x).float()
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        last = step + 1 == a.steps or progress >= 1.0
        if step % a.log_every == 0 or last:
            el = time.time() - t0
            log(f"step {step:5d}/{a.steps}  loss {loss.item():.4f}  lr {lr:.2e}  "
                f"{el / (step + 1):.3f} s/step  elapsed {el / 60:.1f} min")
        if a.eval_every and step > 0 and step % a.eval_every == 0 and not last:
            tl = evaluate(model, train_ids, a.ctx, max_windows=64, bf16=a.bf16)
            vl = evaluate(model, val_ids, a.ctx, max_windows=64, bf16=a.bf16)
            history.append({"step": step + 1, "train_loss": tl, "val_loss": vl,
                            "minutes": (time.time() - t0) / 60})
            log(f"eval step {step + 1}: train loss {tl:.4f}  val loss {vl:.4f}  "
                f"val ppl {math.exp(vl):.2f}  (64 windows each)")
        step += 1
        if last:
            break
    a.steps_done = step
    train_s = time.time() - t0
    # The reported numbers: the fp32 model, as written to the folder, on the whole validation
    # set and on the first 128 windows (32,768 tokens) of the training set.
    tl = evaluate(model, train_ids, a.ctx, max_windows=128)
    vl = evaluate(model, val_ids, a.ctx)
    history.append({"step": step, "train_loss": tl, "val_loss": vl, "minutes": train_s / 60})
    log(f"final eval (fp32): train loss {tl:.4f}  val loss {vl:.4f}  val ppl {math.exp(vl):.2f}")
    return history, train_s


# ----------------------------------------------------------------------------
# 5. output: a Hugging Face folder (config.json, model.safetensors, tokenizer files)


def write_safetensors(path, tensors):
    """safetensors: u64 little-endian header length N, N bytes of JSON (padded with spaces to a
    multiple of 8), then the raw little-endian data of each tensor at its data_offsets."""
    header, offset, blobs = OrderedDict(), 0, []
    header["__metadata__"] = {"format": "pt"}
    for name, t in tensors.items():
        arr = t.detach().to(torch.float32).contiguous().numpy().astype("<f4", copy=False)
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        blobs.append(arr.tobytes())
        offset += arr.nbytes
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_hf_folder(folder, model, c, spm_model_path):
    os.makedirs(folder, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": c.dim, "intermediate_size": c.hidden,
        "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads, "head_dim": c.head_dim,
        "hidden_act": "silu", "rms_norm_eps": c.eps, "rope_theta": c.theta,
        "max_position_embeddings": c.ctx, "vocab_size": c.vocab_size,
        "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False,
        "initializer_range": 0.02, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "float32", "use_cache": True,
    }
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f, indent=2)
    tok_config = {
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "model_max_length": c.ctx, "clean_up_tokenization_spaces": False, "legacy": True,
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(tok_config, f, indent=2)
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, f, indent=2)
    with open(spm_model_path, "rb") as src, open(os.path.join(folder, "tokenizer.model"), "wb") as dst:
        dst.write(src.read())
    # Tied embeddings: like HF, no lm_head.weight is written.
    write_safetensors(os.path.join(folder, "model.safetensors"), model.state_dict())


# ----------------------------------------------------------------------------
# 6. samples and reference outputs


@torch.no_grad()
def generate(model, ids, n, temperature, gen):
    model.eval()
    ids = list(ids)
    for _ in range(n):
        logits = model(torch.tensor([ids[-model.c.ctx:]]))[0, -1]
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            nxt = int(torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=gen))
        if nxt == 2:  # </s>
            break
        ids.append(nxt)
    return ids


def samples(model, sp, a, folder):
    gen = torch.Generator().manual_seed(a.seed)
    ref = []
    for prompt in ["In the beginning", "And the LORD said unto Moses,", "Blessed are"]:
        pids = [sp.bos_id()] + sp.encode(prompt)
        greedy = generate(model, pids, a.sample_tokens, 0.0, gen)
        warm = generate(model, pids, a.sample_tokens, 0.8, gen)
        log(f"\n--- prompt {prompt!r}, greedy:\n{sp.decode(greedy[1:])}")
        log(f"--- prompt {prompt!r}, temperature 0.8 (torch seed {a.seed}):\n{sp.decode(warm[1:])}")
        with torch.no_grad():
            logits = model(torch.tensor([pids]))[0, -1]
        ref.append({"prompt": prompt, "prompt_ids": pids, "greedy_ids": greedy,
                    "greedy_text": sp.decode(greedy[1:]),
                    "last_logits": [round(float(v), 6) for v in logits]})
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(ref, f)


# ----------------------------------------------------------------------------
# CLI


def cpu_has_bf16():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(HERE, "build"), help="work folder (default models/build)")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=700)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--max-minutes", type=float, default=0,
                   help="guard: past this many minutes the cosine decay follows the clock (0: off)")
    p.add_argument("--seed", type=int, default=1611)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=cpu_has_bf16(),
                   help="bfloat16 autocast for training (default: on when the CPU has AMX-BF16 or AVX512-BF16)")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--sample-tokens", type=int, default=80)
    p.add_argument("--measure", type=int, default=0,
                   help="only time this many training steps of the given shape, then exit")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    data_dir, hf_dir = os.path.join(a.out, "data"), os.path.join(a.out, "kjv-llama-hf")
    os.makedirs(data_dir, exist_ok=True)
    t_start = time.time()

    # 1. text
    train_ch, val_ch = split_chapters(read_kjv())
    train_txt, val_txt = os.path.join(data_dir, "kjv-train.txt"), os.path.join(data_dir, "kjv-val.txt")
    write_text(train_txt, train_ch)
    write_text(val_txt, val_ch)
    log(f"text: {len(train_ch)} train chapters, {len(val_ch)} validation chapters -> {data_dir}")

    # 2. tokenizer
    import sentencepiece as spm
    prefix = os.path.join(data_dir, f"kjv-bpe{a.vocab}")
    if not os.path.exists(prefix + ".model"):
        train_tokenizer(train_txt, prefix, a.vocab, a.threads)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    assert sp.vocab_size() == a.vocab and sp.bos_id() == 1 and sp.eos_id() == 2 and sp.unk_id() == 0
    train_ids, val_ids = encode_chapters(sp, train_ch), encode_chapters(sp, val_ch)
    chars = sum(len("\n".join(v)) for _, _, v in train_ch)
    log(f"tokens: {len(train_ids)} train, {len(val_ids)} validation "
        f"({chars / len(train_ids):.2f} characters per token)")

    # 3. model
    c = Config(a, sp.vocab_size())
    model = Llama(c)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: dim {c.dim}, {c.n_layers} layers, {c.n_heads} heads ({c.n_kv_heads} kv), "
        f"hidden {c.hidden}, ctx {c.ctx}, vocab {c.vocab_size}: {n_params:,} parameters "
        f"({n_params * 4 / 1e6:.1f} MB F32, ~{n_params * 34 / 32 / 1e6:.1f} MB Q8_0)")

    if a.measure:
        gen = torch.Generator().manual_seed(a.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for i in range(a.measure + 1):
            if i == 1:
                t0 = time.time()  # the first step warms up allocators
            x, y = get_batch(train_ids, a.batch, a.ctx, gen)
            with autocast(a.bf16):
                logits = model(x).float()
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        dt = (time.time() - t0) / a.measure
        log(f"measure: {dt:.3f} s/step, {a.batch * a.ctx / dt:.0f} tokens/s")
        return

    # 4. training
    log(f"training: {a.steps} steps of {a.batch} x {a.ctx} tokens "
        f"({a.steps * a.batch * a.ctx / len(train_ids):.2f} epochs), lr {a.lr} -> {a.min_lr}, "
        f"warmup {a.warmup}, seed {a.seed}, {a.threads} threads, "
        f"{'bf16 autocast' if a.bf16 else 'fp32'}")
    history, train_s = train(model, train_ids, val_ids, a)
    final = history[-1]

    # 5. output
    write_hf_folder(hf_dir, model, c, prefix + ".model")
    result = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "args": vars(a), "parameters": n_params,
        "train_tokens": int(len(train_ids)), "val_tokens": int(len(val_ids)),
        "train_loss": final["train_loss"], "val_loss": final["val_loss"],
        "val_perplexity": math.exp(final["val_loss"]),
        "training_minutes": train_s / 60, "total_minutes": (time.time() - t_start) / 60,
        "torch": torch.__version__, "history": history,
    }
    with open(os.path.join(a.out, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    log(f"\nwrote {hf_dir}")
    log(f"final: train loss {final['train_loss']:.4f}, val loss {final['val_loss']:.4f}, "
        f"val perplexity {math.exp(final['val_loss']):.2f} per token, training {train_s / 60:.1f} min")

    # 6. samples
    samples(model, sp, a, hf_dir)


if __name__ == "__main__":
    main()

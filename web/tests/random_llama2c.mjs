// random_llama2c.mjs: writes a llama2.c v0 checkpoint (.bin) with seeded random weights, of any
// shape, for the tests and the benchmark; `lumen convert --outtype f32|q8_0` turns it into GGUF.
//
//   node random_llama2c.mjs OUT.bin dim hidden_dim n_layers n_heads n_kv_heads vocab seq_len [seed]
import fs from 'node:fs';

// Shapes used by the tests and the benchmark (vocab must match the tokenizer given to convert).
export const shapes = {
  small: {dim: 64, hidden_dim: 160, n_layers: 3, n_heads: 4, n_kv_heads: 2, vocab: 512, seq_len: 256},
  // llama2.c's stories15M: 288 wide, 6 layers, 6 heads, with the 32000-token LLaMA vocabulary.
  stories15M: {dim: 288, hidden_dim: 768, n_layers: 6, n_heads: 6, n_kv_heads: 6, vocab: 32000, seq_len: 256},
};

// mulberry32: a tiny seeded generator; values uniform in [-scale, scale).
function uniform(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function writeRandomLlama2c(path, s, seed = 1) {
  const {dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq_len} = s;
  const kv_dim = (dim / n_heads) * n_kv_heads;
  const head_size = dim / n_heads;
  const L = n_layers;
  const fd = fs.openSync(path, 'w');
  const rand = uniform(seed);
  const put = (count, scale, offset = 0) => {
    const chunk = new Float32Array(Math.min(count, 1 << 20));
    for (let done = 0; done < count;) {
      const n = Math.min(chunk.length, count - done);
      for (let i = 0; i < n; ++i) chunk[i] = offset + (rand() * 2 - 1) * scale;
      fs.writeSync(fd, new Uint8Array(chunk.buffer, 0, n * 4));
      done += n;
    }
  };
  // A negative vocab_size marks an unshared classifier: with a tied one, random weights just
  // repeat the last token.
  fs.writeSync(fd, new Uint8Array(new Int32Array([dim, hidden_dim, n_layers, n_heads, n_kv_heads, -vocab, seq_len]).buffer));
  const w = 1 / Math.sqrt(dim), wh = 1 / Math.sqrt(hidden_dim);
  put(vocab * dim, 1.0);                 // token_embedding_table (vocab, dim)
  put(L * dim, 0.1, 1.0);                // rms_att_weight (layer, dim)
  put(L * dim * dim, w * 1.7);           // wq (layer, dim, dim)
  put(L * kv_dim * dim, w * 1.7);        // wk (layer, kv_dim, dim)
  put(L * kv_dim * dim, w * 1.7);        // wv (layer, kv_dim, dim)
  put(L * dim * dim, w * 1.7);           // wo (layer, dim, dim)
  put(L * dim, 0.1, 1.0);                // rms_ffn_weight (layer, dim)
  put(L * hidden_dim * dim, w * 1.7);    // w1 (layer, hidden_dim, dim)
  put(L * dim * hidden_dim, wh * 1.7);   // w2 (layer, dim, hidden_dim)
  put(L * hidden_dim * dim, w * 1.7);    // w3 (layer, hidden_dim, dim)
  put(dim, 0.1, 1.0);                    // rms_final_weight (dim,)
  put(seq_len * head_size, 0);           // freq_cis_real, freq_cis_imag (unused by lumen)
  put(vocab * dim, w * 4);               // wcls (vocab, dim)
  fs.closeSync(fd);
  return path;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [out, ...n] = process.argv.slice(2);
  if (!out || n.length < 7) {
    console.error('usage: node random_llama2c.mjs OUT.bin dim hidden_dim n_layers n_heads n_kv_heads vocab seq_len [seed]');
    process.exit(2);
  }
  const [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq_len, seed] = n.map(Number);
  writeRandomLlama2c(out, {dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq_len}, seed ?? 1);
}

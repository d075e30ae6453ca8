// lumen.js: lumen in the browser, as an ES module. The model lives in a Web Worker (worker.js),
// so the page never freezes; the same C++ core as the native tool runs there as WebAssembly.
//
//   import {Lumen} from './lumen.js';
//   const lm = await Lumen.create({threads: 4});       // threaded build when crossOriginIsolated
//   await lm.load('models/model.gguf', {onProgress: (loaded, total) => {}});   // or a File/Blob
//   for await (const piece of lm.generate('Once upon a time', {temperature: 0.8, n_predict: 64}))
//     out.textContent += piece;
//   lm.stop();  await lm.tokenize('text');  await lm.info();  lm.free();
//
// Every promise rejects with an Error whose message is the core's (e.g. "x.gguf: not a GGUF file").

// A module whose function f stores i32x4.relaxed_dot_i8x16_i7x16_add_s(mem[16..32), mem[32..48),
// mem[48..64)) at mem[0]: relaxed SIMD's 8-bit dot product, which the relaxed builds use.
const RELAXED_DOT_PROBE = Uint8Array.from(
  ('0061736d01000000010401600000030201000503010001070b02036d656d0200016600000a1f011d0041004110fd00' +
   '04004120fd0004004130fd000400fd9302fd0b04000b').match(/../g), h => parseInt(h, 16));

// Whether this engine runs the relaxed builds correctly: it must compile the probe and compute the
// right sums (some engines validate the opcode from an older draft of the proposal and compute
// something else, e.g. Node 20's V8 behind its flag).
export function relaxedDotWorks() {
  try {
    const {exports} = new WebAssembly.Instance(new WebAssembly.Module(RELAXED_DOT_PROBE));
    const bytes = new Int8Array(exports.mem.buffer), words = new Int32Array(exports.mem.buffer);
    const a = [-128, 120, -5, 7], b = [127, 100, 0, 1];  // a + lane stays an int8
    for (let i = 0; i < 16; ++i) { bytes[16 + i] = a[i % 4] + (i >> 2); bytes[32 + i] = b[i % 4]; }
    for (let i = 0; i < 4; ++i) words[12 + i] = 1000 * i;
    exports.f();
    for (let lane = 0; lane < 4; ++lane) {
      let want = 1000 * lane;
      for (let k = 0; k < 4; ++k) want += (a[k] + lane) * b[k];
      if (words[lane] !== want) return false;
    }
    return true;
  } catch {
    return false;
  }
}

// The largest model any build loads (the single-thread one; the threaded one stops at 1.5 GiB and
// load() then switches to the single-thread build by itself).
const MAX_MODEL_BYTES = 2 ** 31;

export class Lumen {
  #worker = null;
  #nextId = 1;
  #pending = new Map();  // id -> {resolve, reject, onMessage}

  // Starts the worker and the WebAssembly module. The SIMD128 + pthreads build is used when the page
  // is cross-origin isolated (it needs SharedArrayBuffer), the single-thread SIMD128 build otherwise;
  // {build: 'mt' | 'st'} forces one. Each comes in a relaxed-SIMD variant (8-bit dot products:
  // faster on quantized models, same results), used when relaxedDotWorks(); {relaxed: false}
  // forces plain SIMD128. threads defaults to the logical cores, at most 8.
  static async create({threads, build, relaxed} = {}) {
    const isolated = globalThis.crossOriginIsolated === true && typeof SharedArrayBuffer === 'function';
    const flavor = build ?? (isolated ? 'mt' : 'st');
    if (flavor === 'mt' && !isolated)
      throw new Error('the threaded build needs a cross-origin isolated page (COOP/COEP headers)');
    if (relaxed && !relaxedDotWorks()) throw new Error('this browser has no (working) relaxed SIMD dot product');
    const n = flavor === 'mt' ? Math.max(1, Math.min(threads ?? navigator.hardwareConcurrency ?? 4, 8)) : 1;
    const lm = new Lumen();
    await lm.#start(flavor, n, relaxed ?? relaxedDotWorks());
    return lm;
  }

  constructor() {
    this.stats = null;  // of the current or last generation: n_generated, generate_ms, tokens_per_second, ...
  }

  async #start(flavor, threads, relaxed) {
    this.#worker?.terminate();
    this.#attach(new Worker(new URL('./worker.js', import.meta.url), {type: 'module'}));
    const init = await this.#call('init', {flavor, threads, relaxed});
    this.build = flavor;                // 'mt' or 'st'
    this.relaxed = relaxed;             // the relaxed-SIMD variant of it
    this.flavor = init.flavor;          // 'simd128' or 'simd128+relaxed', with '+pthreads' for mt
    this.threads = init.threads;
    this.maxModelBytes = MAX_MODEL_BYTES;
  }

  #attach(worker) {
    this.#worker = worker;
    worker.onmessage = ({data}) => {
      const p = this.#pending.get(data.id);
      if (!p) return;
      if (data.type === 'result') {
        this.#pending.delete(data.id);
        p.resolve(data.result);
      } else if (data.type === 'error') {
        this.#pending.delete(data.id);
        p.reject(new Error(data.message));
      } else {
        p.onMessage?.(data);
      }
    };
    worker.onerror = e => {
      const error = new Error(`lumen worker: ${e.message ?? 'failed to start'}`);
      for (const p of this.#pending.values()) p.reject(error);
      this.#pending.clear();
    };
  }

  #call(op, args = {}, onMessage = null) {
    if (!this.#worker) return Promise.reject(new Error('lumen: this instance was freed'));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, {resolve, reject, onMessage});
      this.#worker.postMessage({id, op, ...args});
    });
  }

  // Loads a GGUF model from a URL (cached in the Cache API, so a reload does not fetch it again),
  // a File or a Blob. The bytes stream into the WebAssembly heap chunk by chunk; files over
  // maxModelBytes (2 GiB) are refused before anything is read. Resolves with info().
  async load(source, {onProgress, n_ctx = 0, name} = {}) {
    if (typeof source === 'string' || source instanceof URL) source = new URL(source, globalThis.document?.baseURI ?? location.href).href;
    else if (!(source instanceof Blob)) throw new Error('load: expected a URL, a File or a Blob');
    if (source instanceof Blob && source.size > MAX_MODEL_BYTES)
      throw new Error(`${name ?? source.name ?? 'the model'} is ${(source.size / 1e9).toFixed(2)} GB, more than ` +
                      'the browser build can load (2 GiB: 32-bit WebAssembly has at most 4 GB of memory)');
    const load = () => this.#call('load', {source, name, n_ctx},
                                  m => m.type === 'progress' && onProgress?.(m.loaded, m.total, m.cached));
    try {
      return await load();
    } catch (e) {
      // Between 1.5 and 2 GiB: only the single-thread build has the memory.
      if (this.build !== 'mt' || !/threaded browser build can load/.test(e.message)) throw e;
      await this.#start('st', 1, this.relaxed);
      return load();
    }
  }

  // Streams the continuation of `prompt` as text pieces. Options as `lumen generate`: temperature,
  // top_k, top_p, min_p, repeat_penalty, repeat_last_n, n_predict, seed, add_bos, ignore_eos;
  // onStats(stats) is called with every piece. Breaking out of the loop stops the generation.
  async *generate(prompt, options = {}) {
    const {onStats, ...opts} = options;
    const pieces = [];
    let wake = null, finished = false, failure = null;
    const signal = () => { wake?.(); wake = null; };
    const tokensPerSecond = s => (s.generate_ms > 0 ? (s.n_generated * 1000) / s.generate_ms : 0);
    this.stats = null;
    const done = this.#call('generate', {prompt, options: opts}, m => {
      if (m.type !== 'piece') return;
      this.stats = {...m.stats, tokens_per_second: tokensPerSecond(m.stats)};
      onStats?.(this.stats);
      if (m.text) pieces.push(m.text);
      signal();
    }).then(r => {
      this.stats = {...this.stats, ...r, tokens_per_second: tokensPerSecond(r)};
    }, e => { failure = e; }).finally(() => { finished = true; signal(); });
    try {
      for (;;) {
        while (pieces.length) yield pieces.shift();
        if (finished) break;
        await new Promise(resolve => { wake = resolve; });
      }
      if (failure) throw failure;
    } finally {
      if (!finished) {
        this.stop();
        await done;
      }
    }
  }

  // Stops the generation in progress after the current token (the iterator then ends).
  stop() {
    this.#worker?.postMessage({op: 'stop'});
  }

  tokenize(text, {add_bos = true} = {}) { return this.#call('tokenize', {text, add_bos}); }
  detokenize(ids) { return this.#call('detokenize', {ids: Array.from(ids)}); }
  // Metadata summary, hyperparameters, tensor count and types, parameters, threads, n_ctx.
  info() { return this.#call('info'); }
  // Frees the model but keeps the worker (load() also frees the previous model first).
  unload() { return this.#call('free'); }

  // Frees the model and ends the worker; this instance cannot be used afterwards.
  free() {
    if (!this.#worker) return;
    this.#worker.terminate();
    this.#worker = null;
    const error = new Error('lumen: freed');
    for (const p of this.#pending.values()) p.reject(error);
    this.#pending.clear();
  }
}

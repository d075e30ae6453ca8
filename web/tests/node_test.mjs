// node_test.mjs: the WebAssembly build under Node, against the same oracles as the native tests:
// llama.cpp's and llama2.c's tokenizer vectors, llama2.c's exact greedy stories260K text, and the
// native CLI's output on the same GGUF files (real and random weights, F32 and Q8_0). Corrupt
// files must be JS Errors carrying the core's message, and the module must stay usable after them.
//
//   node node_test.mjs --module build-web/lumen-node.js [--module-mt build-web/lumen-node-mt.js]
//                      --cli build/bin/lumen --realdata ../shared/realdata --tmp build-web/tmp
import {execFileSync} from 'node:child_process';
import fs from 'node:fs';
import {createRequire} from 'node:module';
import path from 'node:path';
import {parseArgs} from 'node:util';

import {shapes, writeRandomLlama2c} from './random_llama2c.mjs';

const {values: args} = parseArgs({options: {
  module: {type: 'string'}, 'module-mt': {type: 'string'}, cli: {type: 'string'},
  realdata: {type: 'string'}, tmp: {type: 'string'},
}});
for (const k of ['module', 'cli', 'realdata', 'tmp'])
  if (!args[k]) { console.error(`node_test: --${k} is required`); process.exit(2); }
fs.mkdirSync(args.tmp, {recursive: true});

// --- a tiny harness: every check is counted; any failure makes the exit status 1

let passed = 0, failed = 0;
function check(ok, what, detail = '') {
  if (ok) ++passed;
  else { ++failed; console.log(`FAILED: ${what}${detail ? `\n  ${detail}` : ''}`); }
}
function checkEqual(actual, expected, what) {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  check(a === e, what, a === e ? '' : `expected ${e.slice(0, 300)}\n  actual   ${a.slice(0, 300)}`);
}
function checkThrows(fn, pattern, what) {
  try {
    fn();
    check(false, what, 'no exception');
  } catch (e) {
    check(e instanceof Error && pattern.test(e.message), what, `threw ${e instanceof Error ? 'Error' : typeof e}: ${e?.message ?? e}`);
  }
}
async function section(name, fn) {
  const before = failed;
  const t0 = Date.now();
  try {
    await fn();
  } catch (e) {
    check(false, `${name}: unexpected exception`, e?.stack ?? String(e));
  }
  console.log(`${failed === before ? 'ok  ' : 'FAIL'} ${name} (${Date.now() - t0} ms)`);
}

// --- the module and helpers

const require = createRequire(import.meta.url);
async function loadModule(file, options = {}) {
  const createLumen = require(path.resolve(file));
  const wasm = fs.readFileSync(file.replace(/\.js$/, '.wasm'));
  return createLumen({wasmBinary: wasm, ...options});
}

// Feeds a file into a ModelLoader in chunks, as the browser does.
function loaderFor(M, bytes, chunk = 64 * 1024) {
  const loader = new M.ModelLoader(bytes.length);
  for (let at = 0; at < bytes.length; at += chunk) loader.write(at, bytes.subarray(at, at + chunk));
  return loader;
}
function loadModel(M, file, options = {threads: 1}) {
  const loader = loaderFor(M, fs.readFileSync(file));
  try {
    return M.Model.load(loader, path.basename(file), options);
  } finally {
    loader.delete();
  }
}
function generate(model, prompt, options, tokensPerStep = 7) {
  model.start(prompt, sampling(options));
  let text = '';
  for (;;) {
    const r = model.step(tokensPerStep);
    text += r.text;
    if (r.done) return {...r, text};
  }
}

const cli = (...a) => execFileSync(args.cli, a, {encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe']});
const realdata = args.realdata;
const tmp = args.tmp;
const tok512 = `${realdata}/stories260K/tok512.model`;

// Every sampling option spelled out, so the wasm and the CLI never depend on defaults.
const sampling = o => ({top_k: 40, top_p: 0.95, min_p: 0.05, repeat_penalty: 1.0, seed: 1, ...o});

// The native CLI's `generate` stdout (prompt + continuation) for these settings.
function nativeGenerate(file, prompt, options) {
  const o = sampling(options);
  return cli('generate', '-m', file, '-p', prompt, '-n', String(o.n_predict), '-s', String(o.seed), '-t', '1',
             '--temp', String(o.temperature), '--top-k', String(o.top_k), '--top-p', String(o.top_p),
             '--min-p', String(o.min_p), '--repeat-penalty', String(o.repeat_penalty));
}

const M = await loadModule(args.module);
console.log(`module: ${args.module} (${M.buildFlavor()})`);

// --- tokenizer

await section('llama.cpp vocab vectors (ggml-vocab-llama-spm), 46 cases, encode and decode', () => {
  const base = `${realdata}/llamacpp-vocab/ggml-vocab-llama-spm.gguf`;
  const tok = M.Tokenizer.fromGGUF(loaderFor(M, fs.readFileSync(base)), 'ggml-vocab-llama-spm.gguf');
  const cases = fs.readFileSync(`${base}.inp`, 'utf8').split('\n__ggml_vocab_test__\n');
  cases.pop();  // after the last separator
  const expected = fs.readFileSync(`${base}.out`, 'utf8').split('\n').slice(0, cases.length)
    .map(line => line.trim() === '' ? [] : line.trim().split(/\s+/).map(Number));
  checkEqual(cases.length, 46, 'llama-spm: 46 cases');
  cases.forEach((text, i) => {
    checkEqual(Array.from(tok.encode(text, false)), expected[i], `llama-spm case ${i} encode ${JSON.stringify(text)}`);
    checkEqual(tok.decode(expected[i]), text, `llama-spm case ${i} decode`);
  });
  tok.delete();
});

await section('llama2.c tokenizer vectors (tokenizer.model), 5 cases', () => {
  const tok = M.Tokenizer.fromSentencePiece(loaderFor(M, fs.readFileSync(`${realdata}/llama2c/tokenizer.model`)), 'tokenizer.model');
  checkEqual(tok.nVocab(), 32000, 'llama2.c vocabulary size');
  const lines = fs.readFileSync(`${realdata}/llama2c/tokenizer_test_vectors.jsonl`, 'utf8').split('\n').filter(Boolean);
  checkEqual(lines.length, 5, 'llama2.c: 5 vectors');
  for (const line of lines) {
    const {text, bos, ids} = JSON.parse(line);
    checkEqual(Array.from(tok.encode(text, bos)), ids, `llama2.c encode ${JSON.stringify(text).slice(0, 40)}`);
    checkEqual(tok.decode(ids), text, `llama2.c decode ${JSON.stringify(text).slice(0, 40)}`);
  }
  tok.delete();
});

// --- real model: stories260K, converted by the native CLI

const stories = `${tmp}/stories260K.gguf`;
cli('convert', `${realdata}/stories260K/stories260K.bin`, '--tokenizer', tok512, '-o', stories);

await section('stories260K greedy text equals llama2.c expected_greedy_{200,256}steps.txt', () => {
  const model = loadModel(M, stories, {threads: 1, n_ctx: 512});
  const info = model.info();
  checkEqual([info.architecture, info.n_params, info.n_tensors, info.hyperparameters.dim, info.hyperparameters.n_layers],
             ['llama', 260032, 47, 64, 5], 'stories260K info');
  for (const steps of [200, 256]) {
    const expected = fs.readFileSync(`${realdata}/stories260K/expected_greedy_${steps}steps.txt`, 'utf8');
    for (const perStep of [1, 64]) {
      const r = generate(model, '', {temperature: 0, repeat_penalty: 1, n_predict: steps}, perStep);
      checkEqual(r.text, expected, `greedy ${steps} steps, ${perStep} tokens per step()`);
      checkEqual(r.n_generated, steps, `${steps} tokens generated`);
    }
  }
  model.delete();
});

await section('stories260K equals the native CLI: greedy with penalty, and sampled (seeded)', () => {
  const model = loadModel(M, stories);
  const prompt = 'Once upon a time';
  for (const o of [{temperature: 0, n_predict: 64, seed: 1},
                   {temperature: 0, repeat_penalty: 1.1, n_predict: 64, seed: 1},
                   {temperature: 0.8, n_predict: 64, seed: 42},
                   {temperature: 1.2, top_k: 0, top_p: 0.9, min_p: 0, repeat_penalty: 1.0, n_predict: 48, seed: 7}]) {
    const r = generate(model, prompt, o);
    checkEqual(prompt + r.text, nativeGenerate(stories, prompt, o), `stories260K ${JSON.stringify(o)}`);
  }
  checkEqual(Array.from(model.tokenize('Once upon a time', true)),
             cli('tokenize', '-m', stories, 'Once upon a time').match(/^\s*\d+/gm)?.map(Number) ?? 'cli format?',
             'tokenize equals the CLI');
  model.delete();
});

await section('the demo model (models/demo-kjv.gguf) prints make demo\'s golden text', () => {
  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
  const model = loadModel(M, `${root}/models/demo-kjv.gguf`, {threads: 1});
  const prompt = 'And it came to pass';
  const r = generate(model, prompt, {temperature: 0.8, n_predict: 200, seed: 42});
  checkEqual(prompt + r.text, fs.readFileSync(`${root}/tests/golden/demo-kjv-and-it-came-to-pass.txt`, 'utf8'),
             'demo-kjv, temperature 0.8, seed 42, 200 tokens');
  model.delete();
});

// --- random weights, F32 and Q8_0

const randomBin = writeRandomLlama2c(`${tmp}/random_small.bin`, shapes.small, 5);
for (const outtype of ['f32', 'f16', 'q8_0', 'q4_0']) {
  await section(`random-weight GGUF (${outtype}): greedy tokens equal the native CLI`, () => {
    const file = `${tmp}/random_small_${outtype}.gguf`;
    cli('convert', randomBin, '--tokenizer', tok512, '--outtype', outtype, '-o', file);
    const model = loadModel(M, file);
    for (const prompt of ['Once upon a time', 'The little dog']) {
      const o = {temperature: 0, repeat_penalty: 1.1, n_predict: 80, seed: 1};
      const native = nativeGenerate(file, prompt, o);
      const r = generate(model, prompt, o);
      checkEqual(prompt + r.text, native, `${outtype} ${JSON.stringify(prompt)}`);
      checkEqual(r.n_generated, 80, `${outtype}: 80 tokens`);
    }
    model.delete();
  });
}

// --- bad input: errors, never crashes

await section('corrupt files and bad arguments are JS Errors with the core message', () => {
  const good = fs.readFileSync(stories);
  const load = bytes => {
    const l = loaderFor(M, bytes);
    try { return M.Model.load(l, 'corrupt.gguf', {threads: 1}); } finally { l.delete(); }
  };
  checkThrows(() => load(Buffer.from('this is not a GGUF file at all')), /corrupt\.gguf: not a GGUF file \(bad magic/, 'bad magic');
  checkThrows(() => load(good.subarray(0, 3)), /too small/, 'three bytes');
  checkThrows(() => load(good.subarray(0, good.length >> 1)), /corrupt\.gguf/, 'truncated to half');
  checkThrows(() => load(good.subarray(0, 2000)), /corrupt\.gguf/, 'truncated in the metadata');
  const badVersion = Buffer.from(good); badVersion.writeUInt32LE(7, 4);
  checkThrows(() => load(badVersion), /unsupported GGUF version 7/, 'bad version');
  const hugeCount = Buffer.from(good); hugeCount.writeUInt32LE(0xffffffff, 8); hugeCount.writeUInt32LE(0xffff, 12);
  checkThrows(() => load(hugeCount), /corrupt\.gguf/, 'absurd tensor count');
  const vocab = fs.readFileSync(`${realdata}/llamacpp-vocab/ggml-vocab-llama-spm.gguf`);
  checkThrows(() => load(vocab), /corrupt\.gguf/, 'a vocabulary-only GGUF is not a model');
  checkThrows(() => new M.ModelLoader(3 * 2 ** 30), /more than the browser build can load/, 'a 3 GiB model is refused up front');
  checkThrows(() => new M.ModelLoader(0), /positive/, 'size 0');
  const l = new M.ModelLoader(10);
  checkThrows(() => l.write(8, new Uint8Array(4)), /outside/, 'a chunk past the end');
  checkThrows(() => M.Model.load(l, 'short.gguf', {}), /only 0 of 10 bytes/, 'a model from an unfilled loader');
  l.delete();
  const model = loadModel(M, stories);
  checkThrows(() => model.start('hi', {top_p: 2}), /top_p/, 'top_p 2');
  checkThrows(() => model.start('hi', {temperature: -1}), /temperature/, 'negative temperature');
  checkThrows(() => model.step(1), /no generation/, 'step before start');
  checkThrows(() => model.detokenize([100000]), /100000/, 'detokenize an id outside the vocabulary');
  // Still usable after every error above.
  const expected = fs.readFileSync(`${realdata}/stories260K/expected_greedy_200steps.txt`, 'utf8');
  checkEqual(generate(model, '', {temperature: 0, repeat_penalty: 1, n_predict: 200}).text, expected, 'usable after errors');
  // A generation abandoned midway (the "stop" of the JS API) leaves the next one unaffected.
  model.start('', {temperature: 0, repeat_penalty: 1, n_predict: 200});
  model.step(5);
  checkEqual(generate(model, '', {temperature: 0, repeat_penalty: 1, n_predict: 200}).text, expected, 'restart after a stop');
  model.delete();
});

// --- a file just under the 2 GiB limit: the heap grows past 2 GB and errors still work there

await section('a 2 GiB file streams into the single-thread heap; its parse error is a JS Error', () => {
  const size = 2 ** 31 - (1 << 20);
  const loader = new M.ModelLoader(size);
  const chunk = new Uint8Array(16 << 20).fill(0xff);
  chunk.set(Buffer.from('GGUF\x03\x00\x00\x00'));
  for (let at = 0; at < size; at += chunk.length)
    loader.write(at, chunk.subarray(0, Math.min(chunk.length, size - at)));
  checkEqual(loader.received(), size, 'all bytes received');
  checkThrows(() => M.Model.load(loader, 'big.gguf', {threads: 1}), /big\.gguf: .*does not fit in the file/, 'parse error above 2 GB');
  loader.delete();
});

// --- the threaded build (pthreads in Node): same text with 1, 2 and 4 threads

if (args['module-mt']) {
  await section('pthread build: stories260K and random Q8_0 identical with 1, 2 and 4 threads', async () => {
    const Mt = await loadModule(args['module-mt'], {lumenPoolSize: 3});
    checkEqual(Mt.buildFlavor(), 'simd128+pthreads', 'pthread flavour');
    checkEqual(Mt.maxThreads(), 4, 'pool of 3 workers + the caller');
    const expected = fs.readFileSync(`${realdata}/stories260K/expected_greedy_256steps.txt`, 'utf8');
    const q8 = `${tmp}/random_small_q8_0.gguf`;
    const o = {temperature: 0, n_predict: 80, seed: 1};
    const native = nativeGenerate(q8, 'Once upon a time', o);
    const bad = new Mt.ModelLoader(16);
    bad.write(0, new Uint8Array(16));
    checkThrows(() => Mt.Model.load(bad, 'zeros.gguf', {threads: 2}), /zeros\.gguf: not a GGUF file/, 'pthread build: errors are JS Errors');
    bad.delete();
    checkThrows(() => new Mt.ModelLoader(1.7e9), /threaded browser build can load \(1\.5 GiB/, 'pthread build: 1.7 GB refused (2 GB of memory)');
    for (const threads of [1, 2, 4, 8]) {
      const m = loadModel(Mt, stories, {threads});
      checkEqual(m.info().threads, Math.min(threads, 4), `${threads} threads requested`);
      checkEqual(generate(m, '', {temperature: 0, repeat_penalty: 1, n_predict: 256}).text, expected, `stories260K, ${threads} threads`);
      m.delete();
      const r = loadModel(Mt, q8, {threads});
      checkEqual('Once upon a time' + generate(r, 'Once upon a time', o).text, native, `random q8_0, ${threads} threads`);
      r.delete();
    }
  });
}

console.log(`\nnode_test: ${passed} checks passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);

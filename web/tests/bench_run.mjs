// bench_run.mjs: token generation speed of the browser builds (bench.html in headless Chromium)
// next to the native CLI on the same GGUF files, best of a few runs each:
//   stories260K (F32), and a stories15M-shaped model (dim 288, 6 layers, 32000-token LLaMA
//   vocabulary) with random weights in F32, Q8_0 and Q4_0.
// Benchmarks are commands, not tests: this prints a table and writes --tmp/bench.json.
//
//   node bench_run.mjs --cli build/bin/lumen --realdata ../shared/realdata --tmp build-web/bench [--n 128]
import {execFileSync, spawnSync} from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {parseArgs} from 'node:util';

import {chromium} from 'playwright-core';

import {createServer} from '../serve.mjs';
import {shapes, writeRandomLlama2c} from './random_llama2c.mjs';

const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const {values: args} = parseArgs({options: {
  cli: {type: 'string'}, realdata: {type: 'string'}, tmp: {type: 'string'},
  n: {type: 'string', default: '128'}, reps: {type: 'string', default: '3'},
  only: {type: 'string'},  // benchmark only the models whose file name contains this
  chromium: {type: 'string', default: '/usr/bin/chromium'},
}});
for (const k of ['cli', 'realdata', 'tmp'])
  if (!args[k]) { console.error(`bench_run: --${k} is required`); process.exit(2); }
fs.mkdirSync(args.tmp, {recursive: true});
const n = Number(args.n), reps = Number(args.reps);
const cli = (...a) => execFileSync(args.cli, a, {encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe']});

// --- the models
const models = [];
const stories = path.join(args.tmp, 'stories260K.gguf');
if (!fs.existsSync(stories))
  cli('convert', `${args.realdata}/stories260K/stories260K.bin`, '--tokenizer', `${args.realdata}/stories260K/tok512.model`, '-o', stories);
models.push(stories);
const bin15 = path.join(args.tmp, 'random_stories15M.bin');
if (!fs.existsSync(bin15)) writeRandomLlama2c(bin15, shapes.stories15M, 3);
for (const type of ['f32', 'q8_0', 'q4_0']) {
  const file = path.join(args.tmp, `random_stories15M_${type}.gguf`);
  if (!fs.existsSync(file)) cli('convert', bin15, '--tokenizer', `${args.realdata}/llama2c/tokenizer.model`, '--outtype', type, '-o', file);
  models.push(file);
}

// --- native: `lumen generate` reports the generation speed on stderr; the better of 2 runs, as a
// browser page reports the better of its 2 (bench.html?reps=2)
function native(file, threads) {
  return Math.max(nativeOnce(file, threads), nativeOnce(file, threads));
}
function nativeOnce(file, threads) {
  const {stderr, status} = spawnSync(args.cli, ['generate', '-m', file, '-p', 'Once upon a time', '-n', String(n), '-t', String(threads),
                                                '--temp', '0', '--repeat-penalty', '1', '--ignore-eos', '-s', '1'],
                                     {encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe']});
  if (status !== 0) throw new Error(`lumen generate failed: ${stderr}`);
  const m = stderr.match(/generation (\d+) tokens, [\d.]+ s, ([\d.]+) tokens\/s/);
  if (!m) throw new Error(`unexpected lumen output: ${stderr}`);
  return Number(m[2]);
}

// --- browser
const server = createServer({root: webDir, mounts: {'/bench-models': args.tmp}});
await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${server.address().port}`;
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lumen-bench-'));
const browser = await chromium.launchPersistentContext(userDataDir, {
  executablePath: args.chromium, headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
// relaxed: true/false forces the relaxed-SIMD variant or plain SIMD128 (the page's default: relaxed
// where the browser runs it)
async function browserBench(file, build, threads, relaxed) {
  const page = await browser.newPage();
  const q = new URLSearchParams({model: `/bench-models/${path.basename(file)}`, build, threads: String(threads), n: String(n),
                                 reps: '2', relaxed: relaxed ? '1' : '0'});
  page.on('pageerror', e => console.log(`  [pageerror] ${e.message}`));
  await page.goto(`${base}/bench.html?${q}`);
  try {
    // (polled once a second: the default polls on every animation frame, which keeps the renderer and
    // the browser process busy on a machine of 2 vCPUs)
    await page.waitForFunction(() => document.body.dataset.result, null, {timeout: 300000, polling: 1000});
  } catch (e) {
    throw new Error(`${path.basename(file)} ${build}${relaxed ? ' relaxed' : ''}: no result; the page says:\n${await page.textContent('#result')}`);
  }
  const result = JSON.parse(await page.evaluate(() => document.body.dataset.result));
  await page.close();
  if (result.error) throw new Error(`${path.basename(file)} ${build}: ${result.error}`);
  return result.tokens_per_second;
}

const hw = os.cpus().length;
const rows = [];
try {
  for (const file of models.filter(m => !args.only || path.basename(m).includes(args.only))) {
    // Round after round, every configuration once per round, the best of each kept: on a shared
    // machine whose speed drifts, each ratio then compares runs made minutes apart at most.
    const configs = {
      native_t1: () => native(file, 1),
      wasm_st: () => browserBench(file, 'st', 1, false),
      wasm_st_relaxed: () => browserBench(file, 'st', 1, true),
      native_tN: () => native(file, hw),
      wasm_mt_t1: () => browserBench(file, 'mt', 1, true),
      wasm_mt_tN: () => browserBench(file, 'mt', hw, true),
    };
    const row = {model: path.basename(file)};
    for (let r = 0; r < reps; ++r)
      for (const [name, run] of Object.entries(configs)) row[name] = Math.max(row[name] ?? 0, await run());
    rows.push(row);
    console.log(JSON.stringify(row));
  }
} finally {
  await browser.close();
  server.close();
  fs.rmSync(userDataDir, {recursive: true, force: true});
}

const f = x => x.toFixed(1).padStart(9);
console.log(`\ntoken generation, tokens/s (best of ${reps} rounds, ${n} tokens, greedy; ${hw} threads = "N"; ${os.cpus()[0].model})`);
console.log('st: single-thread build, SIMD128; st rlx: its relaxed-SIMD variant; mt: the threaded build (relaxed), 1 and N threads');
console.log(`${'model'.padEnd(30)} ${'native t1'.padStart(9)} ${'wasm st'.padStart(9)} ${'st/nat'.padStart(6)}` +
            ` ${'st rlx'.padStart(9)} ${'rlx/nat'.padStart(7)} ${'native tN'.padStart(9)} ${'wasm mt1'.padStart(9)}` +
            ` ${'wasm mtN'.padStart(9)} ${'mtN/nat'.padStart(7)}`);
const pct = (a, b, w) => `${(100 * a / b).toFixed(0)}%`.padStart(w);
for (const r of rows)
  console.log(`${r.model.padEnd(30)} ${f(r.native_t1)} ${f(r.wasm_st)} ${pct(r.wasm_st, r.native_t1, 6)}` +
              ` ${f(r.wasm_st_relaxed)} ${pct(r.wasm_st_relaxed, r.native_t1, 7)} ${f(r.native_tN)} ${f(r.wasm_mt_t1)}` +
              ` ${f(r.wasm_mt_tN)} ${pct(r.wasm_mt_tN, r.native_tN, 7)}`);
fs.writeFileSync(path.join(args.tmp, 'bench.json'), JSON.stringify({n, reps, threads: hw, rows}, null, 2));

// browser_test.mjs: the demo page in a real browser (Debian's chromium, headless, driven by
// playwright-core), served by serve.mjs with and without the COOP/COEP headers:
//   - cross-origin isolated: the threaded build is chosen; the demo model loads; 32 tokens at
//     temperature 0 with seed 1 equal the native CLI's text for the same model, prompt and settings;
//     a reload takes the model from the Cache API (no second download); a corrupt file picked or
//     dropped shows the core's error in the page, and the page still works afterwards;
//   - the JS API directly: the single-thread build, stop(), breaking out of the iterator, errors;
//     the plain SIMD128 build (the relaxed-SIMD variants are the default where the browser has them);
//   - not isolated: the single-thread build is chosen and gives the same text.
// Screenshots go to --tmp (the build folder).
//
//   node browser_test.mjs --cli build/bin/lumen --tmp build-web/tmp [--chromium /usr/bin/chromium]
import {execFileSync} from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {parseArgs} from 'node:util';

import {chromium} from 'playwright-core';

import {createServer} from '../serve.mjs';

const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const {values: args} = parseArgs({options: {
  cli: {type: 'string'}, tmp: {type: 'string'}, realdata: {type: 'string'},
  chromium: {type: 'string', default: '/usr/bin/chromium'},
}});
for (const k of ['cli', 'tmp'])
  if (!args[k]) { console.error(`browser_test: --${k} is required`); process.exit(2); }
fs.mkdirSync(args.tmp, {recursive: true});

let passed = 0, failed = 0;
function check(ok, what, detail = '') {
  if (ok) ++passed;
  else { ++failed; console.log(`FAILED: ${what}${detail ? `\n  ${detail}` : ''}`); }
}
function checkEqual(actual, expected, what) {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  check(a === e, what, a === e ? '' : `expected ${e.slice(0, 400)}\n  actual   ${a.slice(0, 400)}`);
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

// --- the demo model and what the native CLI makes of it

const demo = JSON.parse(fs.readFileSync(`${webDir}/dist/models/demo.json`, 'utf8'));
const demoFile = `${webDir}/dist/models/${demo.file}`;
const settings = {temperature: 0, 'top-k': 40, 'top-p': 0.95, 'min-p': 0.05, 'repeat-penalty': 1, 'n-predict': 32, seed: 1};
function nativeGenerate(prompt) {
  return execFileSync(args.cli, ['generate', '-m', demoFile, '-p', prompt, '-t', '1',
    '--temp', String(settings.temperature), '--top-k', String(settings['top-k']), '--top-p', String(settings['top-p']),
    '--min-p', String(settings['min-p']), '--repeat-penalty', String(settings['repeat-penalty']),
    '-n', String(settings['n-predict']), '-s', String(settings.seed)], {encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe']});
}
const prompt = demo.prompt;
fs.writeFileSync(path.join(args.tmp, 'corrupt_url.gguf'), 'GGUX and then some bytes that are not a model');
const expected = nativeGenerate(prompt);
console.log(`demo model: ${demo.file}; native CLI: ${JSON.stringify(expected.slice(0, 80))}...`);

// --- servers and browser

async function listen(server) {
  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${server.address().port}`;
}
const modelRequests = [];
const server = createServer({root: webDir, mounts: {'/test-files': args.tmp}, coi: true,
                             onRequest: req => req.url.includes(demo.file) && modelRequests.push(req.method)});
const plainServer = createServer({root: webDir, coi: false});
const base = await listen(server);
const plainBase = await listen(plainServer);

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lumen-chromium-'));
const browser = await chromium.launchPersistentContext(userDataDir, {
  executablePath: args.chromium,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: {width: 1000, height: 1100},
});
const pageErrors = [];
async function openPage(url) {
  const page = await browser.newPage();
  page.on('pageerror', e => pageErrors.push(`${url}: ${e.message}`));
  page.on('console', m => { if (m.type() === 'error') console.log(`  [console] ${m.text()}`); });
  await page.goto(url);
  return page;
}
const waitState = (page, state, timeout = 60000) =>
  page.waitForFunction(s => document.body.dataset.state === s, state, {timeout});
const generations = page => page.evaluate(() => Number(document.body.dataset.generations ?? 0));

async function generateInPage(page) {
  await page.fill('#prompt', prompt);
  for (const [id, v] of Object.entries(settings)) await page.fill(`#${id}`, String(v));
  const before = await generations(page);
  await page.click('#generate');
  await page.waitForFunction(n => Number(document.body.dataset.generations ?? 0) > n, before, {timeout: 60000});
  return prompt + await page.textContent('#generated');
}

async function expectError(page, pattern, what) {
  await page.waitForFunction(() => !document.getElementById('error').hidden, null, {timeout: 30000});
  const message = await page.textContent('#error');
  check(pattern.test(message), what, `error area: ${JSON.stringify(message)}`);
  return message;
}

try {
  const page = await openPage(`${base}/index.html`);

  await section('isolated page: threaded build, demo model loaded, 32 greedy tokens equal the native CLI', async () => {
    await waitState(page, 'ready');
    checkEqual(await page.evaluate(() => crossOriginIsolated), true, 'crossOriginIsolated');
    checkEqual(await page.getAttribute('#build', 'data-build'), 'mt', 'the threaded build was chosen');
    checkEqual(await page.getAttribute('#build', 'data-relaxed'), 'true', 'its relaxed-SIMD variant (Chromium has it)');
    console.log(`  build: ${await page.textContent('#build')}; model: ${await page.textContent('#model-name')}`);
    check((await page.textContent('#model-name')).includes(demo.name), 'the page names the demo model');
    check((await page.textContent('#info')).includes('parameters'), 'the info panel is filled');
    const text = await generateInPage(page);
    checkEqual(text, expected, 'page text == native `lumen generate --temp 0 -n 32 -s 1`');
    console.log(`  speed: ${await page.textContent('#speed')}`);
    await page.locator('#info-panel').evaluate(d => { d.open = true; });
    await page.screenshot({path: `${args.tmp}/web_browser.png`, fullPage: true});
  });

  await section('a reload takes the model from the Cache API, not the network', async () => {
    const gets = modelRequests.filter(m => m === 'GET').length;
    await page.reload();
    await waitState(page, 'ready');
    checkEqual(modelRequests.filter(m => m === 'GET').length, gets, 'no second GET of the model');
    check((await page.textContent('#progress-text')).includes('cache'), 'the page says it came from the cache',
          await page.textContent('#progress-text'));
    checkEqual(await generateInPage(page), expected, 'same text after the reload');
  });

  await section('a corrupt file, picked or dropped, shows the core error; the page still works', async () => {
    await page.setInputFiles('#file', {name: 'corrupt.gguf', mimeType: 'application/octet-stream',
                                       buffer: Buffer.from('this is not a GGUF file, just some text')});
    await expectError(page, /corrupt\.gguf: not a GGUF file \(bad magic/, 'picked: bad magic');
    await waitState(page, 'empty');
    checkEqual(await page.isDisabled('#generate'), true, 'generate is disabled without a model');
    await page.screenshot({path: `${args.tmp}/web_browser_error.png`, fullPage: true});
    // Dropped: the first 3000 bytes of the real model (a truncated file).
    const head = Array.from(fs.readFileSync(demoFile).subarray(0, 3000));
    await page.evaluate(bytes => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(bytes)], 'truncated.gguf'));
      document.body.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }, head);
    await page.waitForFunction(() => document.getElementById('error').textContent.includes('truncated.gguf'), null, {timeout: 30000});
    await expectError(page, /truncated\.gguf/, 'dropped: truncated file named in the error');
    console.log(`  error shown: ${await page.textContent('#error')}`);
    await page.click('#load-demo');
    await waitState(page, 'ready');
    checkEqual(await page.isHidden('#error'), true, 'the error clears on the next load');
    checkEqual(await generateInPage(page), expected, 'the demo model works again');
  });

  await section('JS API: single-thread build, stop(), break, tokenize, errors as rejections', async () => {
    const r = await page.evaluate(async ({file, prompt}) => {
      const {Lumen} = await import('/lumen.js');
      const out = {};
      const lm = await Lumen.create({build: 'st'});
      out.build = [lm.build, lm.flavor, lm.threads];
      const info = await lm.load(`dist/models/${file}`);
      out.params = info.n_params;
      let text = '';
      for await (const piece of lm.generate(prompt, {temperature: 0, top_k: 40, top_p: 0.95, min_p: 0.05,
                                                     repeat_penalty: 1, n_predict: 32, seed: 1})) text += piece;
      out.text = prompt + text;
      // stop() after the first piece of a long generation
      let pieces = 0;
      for await (const piece of lm.generate('', {n_predict: 100000, ignore_eos: true, temperature: 0.8})) {
        if (++pieces === 1) lm.stop();
      }
      out.stopped = [lm.stats.stopped, lm.stats.n_generated];
      // break out of the loop: the generation stops and the next call works
      for await (const piece of lm.generate('', {n_predict: 100000, ignore_eos: true})) break;
      out.afterBreak = (await lm.tokenize('Once upon a time')).length;
      out.errors = [];
      for (const bad of [() => lm.generate('x', {top_p: 5}).next(),
                         () => lm.load('/test-files/corrupt_url.gguf'),
                         () => lm.load(new Blob([new Uint8Array(100)]), {name: 'zeros.gguf'}),
                         () => lm.tokenize('no model')]) {
        try { await bad(); out.errors.push('no error'); } catch (e) { out.errors.push(e.message); }
      }
      const cache = await caches.open('lumen-models-v1');
      out.cachedUrls = (await cache.keys()).map(r => new URL(r.url).pathname);
      lm.free();
      // The threaded build with one thread (its worker pool still has one worker).
      const one = await Lumen.create({build: 'mt', threads: 1});
      await one.load(`dist/models/${file}`);
      let text1 = '';
      for await (const piece of one.generate(prompt, {temperature: 0, top_k: 40, top_p: 0.95, min_p: 0.05,
                                                      repeat_penalty: 1, n_predict: 32, seed: 1})) text1 += piece;
      out.mtOne = [one.threads, (await one.info()).threads, prompt + text1];
      one.free();
      // Plain SIMD128 (no relaxed SIMD), as in browsers without it.
      const plain = await Lumen.create({build: 'st', relaxed: false});
      await plain.load(`dist/models/${file}`);
      let text2 = '';
      for await (const piece of plain.generate(prompt, {temperature: 0, top_k: 40, top_p: 0.95, min_p: 0.05,
                                                        repeat_penalty: 1, n_predict: 32, seed: 1})) text2 += piece;
      out.plain = [plain.flavor, prompt + text2];
      plain.free();
      return out;
    }, {file: demo.file, prompt});
    checkEqual(r.build, ['st', 'simd128+relaxed', 1], 'single-thread build on request (relaxed SIMD by default)');
    checkEqual(r.text, expected, 'single-thread text == native CLI');
    check(r.stopped[0] === true && r.stopped[1] < 400, 'stop() ends the generation early', JSON.stringify(r.stopped));
    check(r.afterBreak > 1, 'usable after breaking out of the iterator');
    check(/top_p/.test(r.errors[0]), 'bad options reject', r.errors[0]);
    check(/corrupt_url\.gguf: not a GGUF file/.test(r.errors[1]), 'a corrupt URL rejects with the core message', r.errors[1]);
    check(/zeros\.gguf: not a GGUF file/.test(r.errors[2]), 'a corrupt Blob rejects with the core message', r.errors[2]);
    check(/no model is loaded/.test(r.errors[3]), 'after a failed load there is no model', r.errors[3]);
    checkEqual(r.cachedUrls, [`/dist/models/${demo.file}`], 'the Cache API holds the demo model, not the corrupt download');
    checkEqual(r.mtOne, [1, 1, expected], 'threaded build with threads: 1');
    checkEqual(r.plain, ['simd128', expected], 'plain SIMD128 build ({relaxed: false}): same text');
  });

  await section('not isolated (no COOP/COEP): the single-thread build is chosen, same text', async () => {
    const plain = await openPage(`${plainBase}/index.html`);
    await waitState(plain, 'ready');
    checkEqual(await plain.evaluate(() => crossOriginIsolated), false, 'crossOriginIsolated is false');
    checkEqual(await plain.getAttribute('#build', 'data-build'), 'st', 'the single-thread build was chosen');
    checkEqual(await generateInPage(plain), expected, 'single-thread page text == native CLI');
    await plain.close();
  });

  checkEqual(pageErrors, [], 'no uncaught errors in the pages');
} finally {
  await browser.close();
  server.close();
  plainServer.close();
  fs.rmSync(userDataDir, {recursive: true, force: true});
}

console.log(`\nbrowser_test: ${passed} checks passed, ${failed} failed; screenshots in ${args.tmp}`);
process.exit(failed === 0 ? 0 : 1);

// kernel_test.mjs: runs kernel_test.cpp's WebAssembly builds (SIMD128, and SIMD128 + relaxed SIMD)
// in headless Chromium, which runs relaxed SIMD (Node 20's V8 computes an older draft's dot
// product), and fails unless each prints "kernel_test: N checks passed, 0 failed".
//
//   node kernel_test.mjs --dir build-web/kernel-test [--chromium /usr/bin/chromium]
import path from 'node:path';
import {parseArgs} from 'node:util';

import {chromium} from 'playwright-core';

import {createServer} from '../serve.mjs';

const {values: args} = parseArgs({options: {dir: {type: 'string'}, chromium: {type: 'string', default: '/usr/bin/chromium'}}});
if (!args.dir) { console.error('kernel_test: --dir is required'); process.exit(2); }

const server = createServer({root: path.resolve(args.dir)});
await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
const browser = await chromium.launch({executablePath: args.chromium, args: ['--no-sandbox', '--headless', '--disable-gpu']});
let ok = true;
try {
  for (const variant of ['kernel_test', 'kernel_test-relaxed']) {
    const page = await browser.newPage();
    const lines = [];
    page.on('pageerror', e => lines.push(`[pageerror] ${e.message}`));
    await page.goto(`http://127.0.0.1:${server.address().port}/index.html`);
    const status = await page.evaluate(async variant => {
      const {default: create} = await import(`./${variant}.mjs`);
      let out = '';
      try {
        await create({print: t => { out += t + '\n'; }, printErr: t => { out += t + '\n'; }, noExitRuntime: false});
      } catch (e) {
        out += `[exception] ${e?.message ?? e}\n`;
      }
      return out;
    }, variant);
    lines.push(...status.trimEnd().split('\n'));
    const summary = lines.find(l => /kernel_test: \d+ checks passed, \d+ failed/.test(l));
    const passed = !!summary && / 0 failed$/.test(summary);
    for (const l of lines) if (!passed || /FAILED|kernel_test:/.test(l)) console.log(`${variant}: ${l}`);
    if (!passed) ok = false;
    await page.close();
  }
} finally {
  await browser.close();
  server.close();
}
process.exit(ok ? 0 : 1);

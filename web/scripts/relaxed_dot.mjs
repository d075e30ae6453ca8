// relaxed_dot.mjs: puts relaxed SIMD's 8-bit dot product into a linked lumen module (in place).
// Debian's Emscripten 3.1.6 (clang 14) has no builtin for i32x4.relaxed_dot_i8x16_i7x16_add_s, so
// the relaxed kernels (include/lumen/cpu/matmul_wasm.hpp) emit f32x4.relaxed_fma, which takes the
// same operands (three v128), has an opcode of the same length, and which nothing else in those
// builds uses; this rewrites each one:
//   1. wasm-dis (binaryen) counts the stand-ins in the module's code: there must be some;
//   2. their encoding, FD AF 01, must occur exactly that many times in the whole file (so no
//      immediate or data byte is mistaken for one), and each becomes FD 93 02 (opcode 0x113);
//   3. the result must validate in this Node's V8 with relaxed SIMD enabled.
// (Rewriting binaryen's text instead fails: binaryen 108 cannot read back its own text of a module
// with wasm exceptions, and encodes this instruction with a draft opcode.)
//
//   node relaxed_dot.mjs lumen-st-relaxed.wasm
import {execFileSync} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';

const file = process.argv[2];
if (!file) {
  console.error('usage: node relaxed_dot.mjs MODULE.wasm');
  process.exit(2);
}
const fail = message => {
  console.error(`relaxed_dot: ${file}: ${message}`);
  process.exit(1);
};

const text = execFileSync('wasm-dis', ['--all-features', file], {encoding: 'utf8', maxBuffer: 1 << 30,
                                                                  stdio: ['ignore', 'pipe', 'inherit']});
const n = (text.match(/\bf32x4\.relaxed_fma\b/g) ?? []).length;
if (n === 0) fail('no f32x4.relaxed_fma stand-ins: was it compiled with LUMEN_WASM_RELAXED_DOT and -mrelaxed-simd?');

const bytes = fs.readFileSync(file);
const standIn = Buffer.from([0xfd, 0xaf, 0x01]);  // f32x4.relaxed_fma (0xfd 0x105, as binaryen 108 writes it)
const at = [];
for (let i = bytes.indexOf(standIn); i >= 0; i = bytes.indexOf(standIn, i + 1)) at.push(i);
if (at.length !== n) fail(`${n} stand-ins in the code but ${at.length} occurrences of their bytes FD AF 01 in the file`);
for (const i of at) bytes.set([0xfd, 0x93, 0x02], i);  // i32x4.relaxed_dot_i8x16_i7x16_add_s (0xfd 0x113)

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');  // Node 20; later versions have it on
if (!WebAssembly.validate(bytes)) fail('the rewritten module does not validate');
fs.writeFileSync(file, bytes);
console.log(`relaxed_dot: ${path.basename(file)}: ${n} dot products`);

// bench.js: generates n tokens (greedy, past the end of text) a few times and reports the best
// tokens/s of the wasm generation loop, like `lumen generate` reports it on stderr. The result is
// also left in document.body.dataset.result (JSON) for the headless runner (tests/bench_run.mjs).
import {Lumen} from './lumen.js';

const params = new URLSearchParams(location.search);
const out = document.getElementById('result');
const log = line => { out.textContent = (out.textContent === 'running…' ? '' : out.textContent) + line + '\n'; };

try {
  let model = params.get('model');
  if (!model) model = `dist/models/${(await (await fetch('dist/models/demo.json')).json()).file}`;
  const n = Number(params.get('n') ?? 128), reps = Number(params.get('reps') ?? 3);
  const lm = await Lumen.create({build: params.get('build') ?? undefined,
                                 relaxed: params.has('relaxed') ? params.get('relaxed') === '1' : undefined,
                                 threads: params.has('threads') ? Number(params.get('threads')) : undefined});
  log(`build ${lm.build} (${lm.flavor}), ${lm.threads} thread(s)`);
  const t0 = performance.now();
  const info = await lm.load(model);
  log(`model ${info.file}: ${(info.n_params / 1e6).toFixed(2)} M parameters, ${Object.keys(info.tensor_types).join('/')}, ` +
      `loaded in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  const options = {temperature: 0, repeat_penalty: 1, ignore_eos: true, n_predict: n, seed: 1};
  for await (const _ of lm.generate('Once upon a time', {...options, n_predict: 8})) { /* warm-up */ }
  const runs = [];
  for (let r = 0; r < reps; ++r) {
    for await (const _ of lm.generate('Once upon a time', options)) { /* just time it */ }
    const s = lm.stats;
    runs.push({tokens: s.n_generated, tokens_per_second: s.tokens_per_second,
               wall_tokens_per_second: (s.n_generated * 1000) / s.wall_ms});
    log(`run ${r + 1}: ${s.n_generated} tokens, ${s.tokens_per_second.toFixed(1)} tokens/s ` +
        `(${runs.at(-1).wall_tokens_per_second.toFixed(1)} with the worker's messaging)`);
  }
  const best = runs.reduce((a, b) => (b.tokens_per_second > a.tokens_per_second ? b : a));
  const result = {build: lm.build, flavor: lm.flavor, threads: lm.threads, model: info.file,
                  n_params: info.n_params, types: info.tensor_types, ...best, runs};
  log(`best: ${best.tokens_per_second.toFixed(1)} tokens/s`);
  document.body.dataset.result = JSON.stringify(result);
  lm.free();
} catch (e) {
  log(`error: ${e.message}`);
  document.body.dataset.result = JSON.stringify({error: e.message});
}

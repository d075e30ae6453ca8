// demo.js: the demo page. It only draws; lumen.js and its worker do the work.
// URL parameters: ?build=st|mt forces a build, ?relaxed=0|1 plain SIMD128 or relaxed SIMD, ?threads=N,
// ?model=URL loads another model first.
import {Lumen} from './lumen.js';

const $ = id => document.getElementById(id);
const params = new URLSearchParams(location.search);
let lm = null;
let generating = false;

function setState(state) {
  document.body.dataset.state = state;  // starting | loading | ready | generating | empty
  const ready = state === 'ready';
  $('generate').disabled = !ready;
  $('stop').disabled = state !== 'generating';
  $('load-demo').disabled = $('file').disabled = state === 'loading' || state === 'generating' || !lm;
}

function showError(e) {
  $('error').textContent = e instanceof Error ? e.message : String(e);
  $('error').hidden = false;
}
const clearError = () => { $('error').hidden = true; $('error').textContent = ''; };

const formatBytes = n => n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`;
const formatValue = v => typeof v === 'number' && !Number.isInteger(v) ? String(Number(v.toPrecision(6))) : String(v);
const formatCount = n => n >= 1e9 ? `${(n / 1e9).toFixed(2)} B` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : `${(n / 1e3).toFixed(1)} K`;

function showInfo(info) {
  const h = info.hyperparameters;
  const rows = [
    ['file', `${info.file} (${formatBytes(info.file_size)}, GGUF v${info.gguf_version})`],
    ['architecture', info.architecture + (info.name ? ` — ${info.name}` : '')],
    ['parameters', `${formatCount(info.n_params)} in ${info.n_tensors} tensors (${Object.entries(info.tensor_types).map(([t, n]) => `${n} ${t}`).join(', ')})`],
    ['shape', `dim ${h.dim}, ${h.n_layers} layers, ${h.n_heads} heads (${h.n_kv_heads} kv), feed-forward ${h.hidden_dim}, vocabulary ${h.n_vocab}`],
    ['rope', `${h.rope_dims} dims, base ${formatValue(h.rope_freq_base)}; rms eps ${formatValue(h.rms_norm_eps)}`],
    ['context', `${info.n_ctx} positions (trained with ${h.n_ctx_train})`],
    ['threads', String(info.threads)],
    ...Object.entries(info.metadata).map(([k, v]) => [k, formatValue(v)]),
  ];
  const table = document.createElement('table');
  for (const [k, v] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = k;
    tr.insertCell().textContent = v;
  }
  $('info').replaceChildren(table);
}

async function load(source, label, about = '') {
  clearError();
  setState('loading');
  $('model-name').textContent = `${label} (loading…)`;
  $('model-about').textContent = about;
  $('progress').value = 0;
  $('progress-text').textContent = '';
  const t0 = performance.now();
  try {
    const info = await lm.load(source, {
      onProgress(loaded, total, cached) {
        $('progress').value = total ? loaded / total : 0;
        $('progress-text').textContent = `${formatBytes(loaded)} / ${formatBytes(total)}${cached ? ' (from the browser cache)' : ''}`;
      },
    });
    $('progress').value = 1;
    $('progress-text').textContent = `${formatBytes(info.file_size)} loaded in ${((performance.now() - t0) / 1000).toFixed(2)} s` +
                                     (info.cached ? ' from the browser cache' : '');
    $('model-name').textContent = label;
    showInfo(info);
    setState('ready');
  } catch (e) {
    $('model-name').textContent = 'none';
    $('model-about').textContent = '';
    $('progress').value = 0;
    $('progress-text').textContent = '';
    $('info').textContent = 'No model loaded.';
    showError(e);
    setState('empty');
  }
}

async function loadDemo() {
  try {
    const demo = await (await fetch('dist/models/demo.json')).json();
    $('prompt').value = $('prompt').value || demo.prompt;
    await load(`dist/models/${demo.file}`, `${demo.name} (the bundled demo model)`, demo.about);
  } catch (e) {
    showError(new Error(`the demo model is missing (run make web): ${e.message}`));
    setState('empty');
  }
}

function loadFile(file) {
  if (!file) return;
  load(file, file.name, 'a file from this computer; it is not uploaded anywhere');
}

function readOptions() {
  const num = id => {
    const v = Number($(id).value);
    if ($(id).value.trim() === '' || !Number.isFinite(v)) throw new Error(`${id}: not a number`);
    return v;
  };
  return {temperature: num('temperature'), top_k: num('top-k'), top_p: num('top-p'), min_p: num('min-p'),
          repeat_penalty: num('repeat-penalty'), n_predict: num('n-predict'), seed: num('seed')};
}

async function generate() {
  clearError();
  let options;
  try {
    options = readOptions();
  } catch (e) {
    return showError(e);
  }
  const prompt = $('prompt').value;
  $('output-prompt').textContent = prompt;
  $('generated').textContent = '';
  $('speed').textContent = '';
  setState('generating');
  generating = true;
  const onStats = s => {
    $('speed').textContent = `${s.tokens_per_second.toFixed(1)} tokens/s · ${s.n_generated} tokens · prompt ${s.n_prompt_tokens} tokens in ${s.prompt_ms.toFixed(0)} ms`;
  };
  try {
    for await (const piece of lm.generate(prompt, {...options, onStats})) $('generated').textContent += piece;
    const s = lm.stats;
    onStats(s);
    if (s.stopped) $('speed').textContent += ' · stopped';
    else if (s.stopped_at_eos) $('speed').textContent += ' · end of text';
    else if (s.context_full) $('speed').textContent += ' · context full';
  } catch (e) {
    showError(e);
  }
  generating = false;
  document.body.dataset.generations = Number(document.body.dataset.generations ?? 0) + 1;  // for tests
  setState('ready');
}

// Drag and drop anywhere on the page.
let dragDepth = 0;
addEventListener('dragenter', e => { e.preventDefault(); if (++dragDepth === 1) $('drop-overlay').hidden = false; });
addEventListener('dragleave', () => { if (--dragDepth <= 0) { dragDepth = 0; $('drop-overlay').hidden = true; } });
addEventListener('dragover', e => e.preventDefault());
addEventListener('drop', e => {
  e.preventDefault();
  dragDepth = 0;
  $('drop-overlay').hidden = true;
  if (generating || !lm) return;
  loadFile(e.dataTransfer?.files?.[0]);
});

$('file').addEventListener('change', e => { loadFile(e.target.files[0]); e.target.value = ''; });
$('load-demo').addEventListener('click', loadDemo);
$('generate').addEventListener('click', generate);
$('stop').addEventListener('click', () => lm?.stop());
$('prompt').addEventListener('keydown', e => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && !$('generate').disabled) generate();
});

try {
  lm = await Lumen.create({build: params.get('build') ?? undefined,
                           relaxed: params.has('relaxed') ? params.get('relaxed') === '1' : undefined,
                           threads: params.has('threads') ? Number(params.get('threads')) : undefined});
  $('build').textContent = `WebAssembly SIMD128${lm.relaxed ? ' + relaxed SIMD' : ''}, ` +
                           (lm.build === 'mt' ? `${lm.threads} threads` : 'single thread');
  $('build').dataset.build = lm.build;
  $('build').dataset.relaxed = String(lm.relaxed);
  setState('empty');
  if (params.get('model')) await load(params.get('model'), params.get('model'));
  else await loadDemo();
} catch (e) {
  $('build').textContent = 'failed to start';
  showError(e);
}

// worker.js: owns the WebAssembly module and the model, off the page's thread. It speaks in
// messages: {id, op, ...} in; {id, type: 'progress' | 'piece' | 'result' | 'error', ...} out.
//   init {flavor: 'mt' | 'st', threads, relaxed}   loads dist/lumen-<flavor>[-relaxed].mjs
//   load {source: URL string | Blob, name, n_ctx}   streams the bytes into the wasm heap
//   generate {prompt, options}   runs a few tokens at a time, returning to the event loop between
//                                slices so that 'stop' (and anything else) is heard
//   stop, tokenize {text, add_bos}, info, free
const CACHE_NAME = 'lumen-models-v1';
const CHUNK = 8 << 20;      // bytes per Blob slice
const SLICE_MS = 25;        // time per burst of tokens between event-loop turns

let M = null;               // the Emscripten module
let threads = 1;
let model = null;           // Module.Model
let stopRequested = false;
let queue = Promise.resolve();  // ops run one after another; 'stop' jumps the queue

const post = (msg, transfer) => self.postMessage(msg, transfer ?? []);

// A zero-delay yield to the event loop (setTimeout is clamped to 4 ms when nested).
const channel = new MessageChannel();
const waiting = [];
channel.port1.onmessage = () => waiting.shift()?.();
const nextTurn = () => new Promise(resolve => { waiting.push(resolve); channel.port2.postMessage(0); });

self.onmessage = ({data}) => {
  if (data.op === 'stop') {
    stopRequested = true;
    return;
  }
  queue = queue.then(() => run(data));
};

async function run({id, op, ...args}) {
  try {
    const result = await ops[op](args, id);
    post({id, type: 'result', result});
  } catch (e) {
    post({id, type: 'error', message: e instanceof Error ? e.message : String(e)});
  }
}

function needModel() {
  if (!model) throw new Error('no model is loaded');
  return model;
}

function freeModel() {
  if (model) model.delete();
  model = null;
}

// Streams a ReadableStream's chunks into the loader, reporting progress.
async function streamInto(loader, body, total, id, cached) {
  const reader = body.getReader();
  let loaded = 0, lastReport = 0;
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    if (loaded + value.length > total) {
      reader.cancel();
      throw new Error(`the download is longer than its Content-Length (${total} bytes)`);
    }
    loader.write(loaded, value);
    loaded += value.length;
    const now = performance.now();
    if (now - lastReport > 50) {
      lastReport = now;
      post({id, type: 'progress', loaded, total, cached});
    }
  }
  if (loaded !== total) throw new Error(`the download ended after ${loaded} of ${total} bytes`);
  post({id, type: 'progress', loaded, total, cached});
}

// The cached copy of a URL if it still matches the server's (HEAD: same size and date), or if the
// server cannot be asked. Null when there is none or it is stale.
async function fromCache(cache, url) {
  const hit = await cache.match(url);
  if (!hit) return null;
  try {
    const head = await fetch(url, {method: 'HEAD', cache: 'no-store'});
    if (!head.ok) return hit;
    const same = k => head.headers.get(k) === hit.headers.get(k);
    if (same('Content-Length') && same('Last-Modified') && same('ETag')) return hit;
    await cache.delete(url);
    return null;
  } catch {
    return hit;  // offline: the cached copy is all there is
  }
}

async function loadUrl(url, id) {
  const cache = self.caches ? await self.caches.open(CACHE_NAME).catch(() => null) : null;
  let response = cache ? await fromCache(cache, url) : null;
  const cached = response !== null;
  let caching = null;
  if (!response) {
    response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`);
  }
  const name = decodeURIComponent(new URL(url).pathname.split('/').pop() || 'model.gguf');
  const total = Number(response.headers.get('Content-Length'));
  if (!(total > 0)) {
    // No length (a compressed or chunked response): the bytes must be gathered before the single
    // allocation, so two copies exist for a moment.
    const bytes = new Uint8Array(await response.arrayBuffer());
    const loader = new M.ModelLoader(bytes.length);
    try {
      loader.write(0, bytes);
      post({id, type: 'progress', loaded: bytes.length, total: bytes.length, cached});
      return finishLoad(loader, name);
    } finally {
      loader.delete();
    }
  }
  let loader;
  try {
    loader = new M.ModelLoader(total);  // "... more than the browser build can load" before any download
  } catch (e) {
    response.body?.cancel().catch(() => {});
    throw e;
  }
  try {
    if (cache && !cached) caching = cache.put(url, response.clone()).catch(e => console.warn(`lumen: not cached: ${e.message}`));
    try {
      await streamInto(loader, response.body, total, id, cached);
      const info = finishLoad(loader, name);
      await caching;
      return {...info, cached};
    } catch (e) {
      if (caching) await caching.then(() => cache.delete(url)).catch(() => {});  // keep no copy of a bad file
      throw e;
    }
  } finally {
    loader.delete();
  }
}

async function loadBlob(blob, name, id) {
  const loader = new M.ModelLoader(blob.size);
  try {
    for (let at = 0; at < blob.size; at += CHUNK) {
      const chunk = new Uint8Array(await blob.slice(at, Math.min(at + CHUNK, blob.size)).arrayBuffer());
      loader.write(at, chunk);
      post({id, type: 'progress', loaded: at + chunk.length, total: blob.size, cached: false});
    }
    return finishLoad(loader, name);
  } finally {
    loader.delete();
  }
}

let loadOptions = {};
function finishLoad(loader, name) {
  model = M.Model.load(loader, name, {threads, n_ctx: loadOptions.n_ctx ?? 0});
  return model.info();
}

const ops = {
  async init({flavor, threads: n, relaxed}) {
    const {default: createLumen} = await import(`./dist/lumen-${flavor}${relaxed ? '-relaxed' : ''}.mjs`);
    threads = flavor === 'mt' ? Math.max(1, n | 0) : 1;
    // threads - 1 pre-started workers (the calling thread is the other one). At least one:
    // Emscripten 3.1.6 never finishes starting a pthread build whose pool is empty.
    M = await createLumen({lumenPoolSize: Math.max(1, threads - 1)});
    return {flavor: M.buildFlavor(), threads: Math.min(threads, M.maxThreads()), maxModelBytes: M.maxModelBytes};
  },

  async load({source, name, n_ctx}, id) {
    freeModel();
    loadOptions = {n_ctx};
    if (typeof source === 'string') return loadUrl(source, id);
    if (source instanceof Blob) return loadBlob(source, name ?? source.name ?? 'model.gguf', id);
    throw new Error('load: expected a URL, a File or a Blob');
  },

  async generate({prompt, options}, id) {
    const m = needModel();
    stopRequested = false;
    const t0 = performance.now();
    m.start(prompt, options);
    let perStep = 1, stats = null;
    while (!stopRequested) {
      const s0 = performance.now();
      stats = m.step(perStep);
      const elapsed = performance.now() - s0;
      // Aim for bursts of about SLICE_MS: cheap tokens go in batches, expensive ones one by one.
      perStep = Math.max(1, Math.min(256, Math.round(perStep * SLICE_MS / Math.max(elapsed, 0.05))));
      const {text, ...rest} = stats;
      post({id, type: 'piece', text, stats: {...rest, wall_ms: performance.now() - t0}});
      if (stats.done) break;
      await nextTurn();
    }
    const {text, ...rest} = stats ?? {};
    return {...rest, stopped: stopRequested && !rest.done, wall_ms: performance.now() - t0};
  },

  tokenize: ({text, add_bos}) => Array.from(needModel().tokenize(text, add_bos ?? true)),
  detokenize: ({ids}) => needModel().detokenize(ids),
  info: () => needModel().info(),
  free: () => { freeModel(); return true; },
};

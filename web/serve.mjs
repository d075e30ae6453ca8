// serve.mjs: a small static server for the demo page (no dependencies). It sends the headers that
// make the page cross-origin isolated (COOP same-origin + COEP require-corp), which the threaded
// WebAssembly build needs for SharedArrayBuffer; any other host must send them too.
//
//   node web/serve.mjs [--host 127.0.0.1] [--port 8080] [--root web] [--mount /models=DIR] [--no-coi]
//
// Also a module: createServer({root, mounts, coi, onRequest}) returns a node http.Server.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {parseArgs} from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));

const mimeTypes = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.gguf': 'application/octet-stream',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

// mounts: {'/models': '/abs/dir'} serves that folder under the URL prefix.
export function createServer({root = here, mounts = {}, coi = true, onRequest = null} = {}) {
  const roots = [...Object.entries(mounts).map(([prefix, dir]) => [prefix.replace(/\/+$/, '') + '/', path.resolve(dir)]),
                 ['/', path.resolve(root)]];
  return http.createServer((req, res) => {
    const headers = {'Cache-Control': 'no-cache', 'X-Content-Type-Options': 'nosniff'};
    if (coi) {
      headers['Cross-Origin-Opener-Policy'] = 'same-origin';
      headers['Cross-Origin-Embedder-Policy'] = 'require-corp';
      headers['Cross-Origin-Resource-Policy'] = 'same-origin';
    }
    const fail = (status, text) => {
      res.writeHead(status, {...headers, 'Content-Type': 'text/plain; charset=utf-8'});
      res.end(req.method === 'HEAD' ? undefined : text + '\n');
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return fail(405, 'method not allowed');
    let urlPath;
    try {
      urlPath = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    } catch {
      return fail(400, 'bad request');
    }
    if (urlPath.endsWith('/')) urlPath += 'index.html';
    const [prefix, dir] = roots.find(([p]) => urlPath.startsWith(p));
    const file = path.resolve(dir, '.' + urlPath.slice(prefix.length - 1));
    if (file !== dir && !file.startsWith(dir + path.sep)) return fail(403, 'forbidden');
    fs.stat(file, (err, st) => {
      if (onRequest) onRequest(req, err ? 404 : 200);
      if (err || !st.isFile()) return fail(404, `not found: ${urlPath}`);
      res.writeHead(200, {
        ...headers,
        'Content-Type': mimeTypes[path.extname(file).toLowerCase()] ?? 'application/octet-stream',
        'Content-Length': st.size,
        'Last-Modified': st.mtime.toUTCString(),
      });
      if (req.method === 'HEAD') return res.end();
      fs.createReadStream(file).on('error', () => res.destroy()).pipe(res);
    });
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const {values: o} = parseArgs({options: {
    host: {type: 'string', default: process.env.HOST ?? '127.0.0.1'},
    port: {type: 'string', default: process.env.PORT ?? '8080'},
    root: {type: 'string', default: here},
    mount: {type: 'string', multiple: true, default: []},
    'no-coi': {type: 'boolean', default: false},
  }});
  const mounts = Object.fromEntries(o.mount.map(m => {
    const at = m.indexOf('=');
    if (at < 1) throw new Error(`--mount wants /prefix=DIR, got ${m}`);
    return [m.slice(0, at), m.slice(at + 1)];
  }));
  const server = createServer({root: o.root, mounts, coi: !o['no-coi']});
  server.listen(Number(o.port), o.host, () => {
    const {port} = server.address();
    console.log(`lumen web: http://${o.host}:${port}/  (root ${path.resolve(o.root)}` +
                `${o['no-coi'] ? ', not cross-origin isolated' : ', COOP/COEP on'}; Ctrl-C stops)`);
  });
}

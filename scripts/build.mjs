#!/usr/bin/env node
// Builds the shipped CLI: `dist/keyroll.js`, an ESM bundle of src/cli/run.ts with one lazily
// loaded chunk per command, so `keyroll controller` loads the controller and nothing else.
//
//   npm run build                 → dist/
//   node scripts/build.mjs --outdir DIR [--metafile FILE]   (FILE: esbuild's metafile, JSON)
//
// Why a bundle (BENCHMARKS.md, controller RSS): running the sources costs Node's TypeScript
// stripping (≈20 MB resident) and loads every module of every dependency the controller touches;
// bundled, the controller loads only its own code and json5: no zod and no pino (its config and
// the profile-store checks are hand-written, src/log.ts writes the log lines itself), which
// test/build/controller-chunk.test.ts checks on this build's metafile. The bundle sits one
// folder below the package root, as src/ does, so src/version.ts finds package.json and the
// OpenClaw cache from either place. @kubernetes/client-node (the same package the tests run) is
// bundled into the chunks of the commands that use Kubernetes only, tree-shaken to what
// src/operator/kube.ts uses (BENCHMARKS.md, Operator): see `kubeClientTreeShaken` below.
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { outdir: { type: 'string' }, metafile: { type: 'string' } } });
const outdir = values.outdir ?? join(root, 'dist');

/**
 * Node's builtins as CommonJS modules. An ESM import of a builtin builds a namespace from every
 * export, which runs lazy getters: `node:http` loads undici for `WebSocket`, `node:crypto` loads
 * WebCrypto, `node:readline` its promise API. `process.getBuiltinModule` returns the module as
 * is, and esbuild reads named imports off it where they are used. esbuild's CommonJS interop
 * (`__toESM`) still asks for every export's property descriptor, which materialises Node's lazy
 * exports too (`node:util`'s `parseArgs`, `diff`, `setTraceSigInt` load worker_threads and
 * more: ≈0.6 MB of the controller's RSS, BENCHMARKS.md), so an object module is handed over as a
 * view of getters built from its export names alone; a function module (`node:events`) as is.
 */
const builtinsAsCommonJs = {
  name: 'builtins-as-commonjs',
  setup(b) {
    const names = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
    b.onResolve({ filter: /^[a-z_:/]+$/ }, (args) =>
      names.has(args.path) && args.kind === 'import-statement'
        ? { path: args.path.replace(/^node:/, ''), namespace: 'node-builtin' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'node-builtin' }, (args) => ({
      contents:
        `const m = process.getBuiltinModule(${JSON.stringify(`node:${args.path}`)});\n` +
        `const view = {};\n` +
        `for (const name of Object.getOwnPropertyNames(m)) Object.defineProperty(view, name, { get: () => m[name], enumerable: true });\n` +
        `module.exports = typeof m === 'function' ? m : view;`,
      loader: 'js',
    }));
  },
};

/**
 * @kubernetes/client-node's files as free of side effects, so that esbuild drops every module of
 * the package that kube.ts does not reach. Its index re-exports every generated API class and
 * model, exec/attach/port-forward (ws), cp (tar-fs), metrics and the object cache; imported as a
 * package, all of them load and stay resident (≈35 MB of the operator's RSS). Its only
 * side-effect import is a `File` polyfill for Node 18, which Node >= 22 does not need.
 *
 * Only the package name and relative paths reach the plugin (every other import stays in Go), and
 * the package's own relative imports, which name their files exactly as ESM must, are resolved
 * here: asking esbuild back for each of its ≈1,000 files made the whole build take ≈16 s of CPU
 * instead of ≈2.6 s (BENCHMARKS.md, Operator).
 */
const kubeClientTreeShaken = {
  name: 'kube-client-tree-shaken',
  setup(b) {
    const pkg = `${join('node_modules', '@kubernetes', 'client-node')}/`;
    b.onResolve({ filter: /^(\.\.?\/|@kubernetes\/client-node$)/ }, async (args) => {
      if (args.pluginData === kubeClientTreeShaken) return undefined;
      const fromPkg = args.importer.includes(pkg);
      if (!fromPkg && args.path !== '@kubernetes/client-node') return undefined;
      if (fromPkg && /\.js$/.test(args.path)) {
        const path = join(args.resolveDir, args.path);
        if (existsSync(path)) return { path, sideEffects: false };
      }
      const r = await b.resolve(args.path, {
        kind: args.kind,
        importer: args.importer,
        resolveDir: args.resolveDir,
        pluginData: kubeClientTreeShaken,
      });
      return r.errors.length > 0 ? undefined : { path: r.path, sideEffects: false };
    });
  },
};

rmSync(outdir, { recursive: true, force: true });
const result = await build({
  absWorkingDir: root,
  entryPoints: { keyroll: 'src/cli/run.ts' },
  outdir,
  // Chunks beside the entry, so that every file sits one folder below the package root.
  chunkNames: '[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node22.19',
  // Whitespace and syntax only: stack traces keep their function names.
  minifyWhitespace: true,
  minifySyntax: true,
  // License comments into dist/*.LEGAL.txt: one of them is not ASCII, which would make V8 hold
  // its whole chunk's source as a two-byte string (4 MB instead of 2 MB for the operator's).
  legalComments: 'external',
  // CommonJS dependencies (json5, yaml, prom-client) call require(); give every chunk one.
  banner: {
    js: "import { createRequire as __keyrollRequire } from 'node:module';\nconst require = __keyrollRequire(import.meta.url);",
  },
  plugins: [builtinsAsCommonJs, kubeClientTreeShaken],
  metafile: true,
  logLevel: 'warning',
});

if (values.metafile) writeFileSync(values.metafile, JSON.stringify(result.metafile));
const outputs = Object.values(result.metafile.outputs);
const total = outputs.reduce((sum, out) => sum + out.bytes, 0);
process.stderr.write(
  `build: ${relative(root, join(outdir, 'keyroll.js'))} and ${outputs.length - 1} chunks, ` +
    `${(total / 1024).toFixed(0)} KiB in all\n`,
);

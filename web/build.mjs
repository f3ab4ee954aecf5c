// Builds the web app into dist/: index.html, app.js (one minified bundle),
// app.css, and a .gz beside each (the gateway serves those precompressed
// when the browser accepts gzip). `node build.mjs --watch` rebuilds on change.
import { build, context } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
const watch = process.argv.includes('--watch');

// FullCalendar injects a stylesheet whose icon font is a data: URL. The
// gateway's content security policy allows fonts from this origin only, so
// the browser would refuse it (and log an error): drop the @font-face; the
// few icons are drawn as text in app.css (and the buttons use text).
const noIconFont = {
  name: 'no-icon-font',
  setup(b) {
    b.onLoad({ filter: /@fullcalendar[\\/]core[\\/]internal-common\.js$/ }, (args) => {
      const src = readFileSync(args.path, 'utf8');
      const out = src.replace(/@font-face\{font-family:fcicons;[^}]*\}/, '');
      if (out === src) console.warn('build: FullCalendar icon font not found (nothing removed)');
      return { contents: out, loader: 'js' };
    });
  },
};

const options = {
  entryPoints: { app: join(here, 'src/main.js'), 'app-css': join(here, 'src/app.css') },
  bundle: true,
  minify: true,
  sourcemap: false,
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  outdir: dist,
  // app.css is its own entry so the page can load it before the script.
  entryNames: '[name]',
  legalComments: 'none',
  logLevel: 'info',
  plugins: [noIconFont, { name: 'finish', setup(b) { b.onEnd((r) => { if (!r.errors.length) finish(); }); } }],
};

// Copies index.html, renames app-css.css to app.css, writes .gz files and
// prints the sizes (the JS budget is 300 KB gzip-compressed).
function finish() {
  copyFileSync(join(here, 'src/index.html'), join(dist, 'index.html'));
  rmSync(join(dist, 'app.css'), { force: true });
  copyFileSync(join(dist, 'app-css.css'), join(dist, 'app.css'));
  rmSync(join(dist, 'app-css.css'), { force: true });
  rmSync(join(dist, 'app-css.js'), { force: true });
  for (const f of readdirSync(dist)) {
    if (f.endsWith('.gz')) rmSync(join(dist, f));
  }
  const sizes = [];
  for (const f of readdirSync(dist)) {
    const raw = readFileSync(join(dist, f));
    const gz = gzipSync(raw, { level: 9 });
    writeFileSync(join(dist, f + '.gz'), gz);
    sizes.push(`${f}: ${(raw.length / 1024).toFixed(1)} KiB, ${(gz.length / 1024).toFixed(1)} KiB gzip`);
  }
  console.log(sizes.join('\n'));
}

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
if (watch) {
  const ctx = await context(options);
  await ctx.watch();
} else {
  await build(options);
}

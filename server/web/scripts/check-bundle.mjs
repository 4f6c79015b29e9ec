// Checks that the committed bundle (dist/app.js) is what the sources build
// to, so the binary embeds exactly the reviewed TypeScript.
import { execFileSync } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'kodama-web-'));
try {
  const out = join(dir, 'app.js');
  execFileSync('npx', ['esbuild', 'src/main.ts', '--bundle', '--minify', '--target=es2020,safari15', '--format=iife', `--outfile=${out}`, '--legal-comments=none', '--log-level=warning'], { stdio: 'inherit' });
  const built = readFileSync(out, 'utf8');
  const committed = readFileSync('dist/app.js', 'utf8');
  if (built !== committed) {
    console.error('dist/app.js does not match src/: run `npm run build` in server/web and commit dist/app.js');
    process.exit(1);
  }
  console.log(`dist/app.js matches its sources (${built.length} bytes)`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}

// Test equipment for the browser tests and the web benchmark: a real
// kodama-server (offline, loopback) with simulated cameras (kodama-camera
// with the synthetic test pattern; its SIM7600 and GPS served by kodama-sim
// on ptys), and headless Debian chromium driven by playwright-core. Builds
// nothing: run BUILD (below) first (scripts/web-test.sh does).

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, existsSync, rmSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, '../../..');
const targetDir = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(repo, 'target');
export const bin = (name) => join(targetDir, process.env.KODAMA_PROFILE ?? 'debug', name);
export const BUILD = 'cargo build -p kodama-server -p kodama-firmware -p kodama-sim --bins --features kodama-firmware/synthetic';
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => res(port)); });
  });
}

/** Waits for `f()` to return a truthy value, polling; bounded. */
export async function until(what, f, timeoutMs = 20000, everyMs = 200) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try { last = await f(); if (last) return last; } catch (e) { last = e; }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
}

export class Rig {
  constructor() {
    this.data = mkdtempSync(join(tmpdir(), 'kodama-web-test-'));
    this.procs = new Map();
    this.cameraIds = [];
  }

  server() {
    return [bin('kodama-server'), '--data-dir', this.data, '--listen', `127.0.0.1:${this.quicPort}`, '--offline'];
  }

  async start({ cameras = 1, fps = 30, width = 640, height = 480, motion = null, secondary = null, audio = false } = {}) {
    const first = { fps, width, height };
    for (const b of ['kodama-server', 'kodama-camera', 'kodama-sim']) {
      if (!existsSync(bin(b))) throw new Error(`${bin(b)} is missing: ${BUILD}`);
    }
    this.quicPort = await freePort();
    this.apiPort = await freePort();
    await this.startServer();
    const serverId = execFileSync(this.server()[0], [...this.server().slice(1), 'id']).toString().trim();
    for (let i = 1; i <= cameras; i++) {
      // Cameras after the first may be smaller (`secondary`), to spare CPU.
      const { fps, width, height } = i > 1 && secondary ? secondary : first;
      const conf = join(this.data, `cam-${i}.toml`);
      // The camera's SIM7600 and GPS: kodama-sim on ptys, opened by the
      // firmware's real serial drivers.
      const at = join(this.data, `cam-${i}.at`), nmea = join(this.data, `cam-${i}.nmea`);
      this.spawn(`sim-${i}`, bin('kodama-sim'), ['--at', at, '--nmea', nmea, '--scenario', 'healthy', '--lat', String(35.6586 + i * 0.01), '--lon', '139.7454']);
      await until('kodama-sim ptys', () => existsSync(at) && existsSync(nmea), 10000, 50);
      writeFileSync(conf, `
[camera]
name = "cam-${i}"
key_path = "${join(this.data, `cam-${i}.key`)}"
[server]
node_id = "${serverId}"
addrs = ["127.0.0.1:${this.quicPort}"]
[network]
offline = true
reconnect_initial_ms = 200
reconnect_max_ms = 1000
[video]
source = "synthetic"
width = ${width}
height = ${height}
fps = ${fps}
bitrate_kbps = 800
keyframe_interval = ${fps}
${motion ? `synthetic_motion = { every_s = ${motion.every_s}, for_s = ${motion.for_s} }` : ''}
${audio && i === 1 ? '[audio]\nenabled = true\nsource = "synthetic"' : ''}
[modem]
enabled = true
port = "${at}"
apn = "internet"
[gnss]
port = "${nmea}"
`);
      const id = execFileSync(bin('kodama-camera'), ['id', '--config', conf]).toString().trim();
      execFileSync(this.server()[0], [...this.server().slice(1), 'allow', 'add', id, '--camera', '--label', `cam-${i}`]);
      this.cameraIds.push(id);
      this.spawn(`cam-${i}`, bin('kodama-camera'), ['--config', conf]);
    }
    await until('cameras online', async () => {
      const r = await this.api('/api/v1/cameras');
      const j = await r.json();
      return j.cameras?.filter((c) => c.online).length === cameras;
    }, 30000);
  }

  async startServer() {
    const p = this.spawn('server', this.server()[0], [...this.server().slice(1), '--api-listen', `127.0.0.1:${this.apiPort}`, 'run']);
    this.serverOut = '';
    p.stdout.on('data', (d) => { this.serverOut += d; });
    await until('the server to print its web app URL', () => /web app: (\S+)\//.test(this.serverOut), 30000, 100);
    this.url = this.serverOut.match(/web app: (\S+)\//)[1];
    const link = this.serverOut.match(/first-run setup[^:]*: (\S+)/);
    if (link) this.setupLink = link[1];
    this.token = readFileSync(join(this.data, 'api-token'), 'utf8').trim();
  }

  /** Stops the server (SIGTERM, graceful) and waits for it to exit. */
  async stopServer() {
    const p = this.procs.get('server');
    this.procs.delete('server');
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await Promise.race([exited, sleep(15000)]);
  }

  spawn(name, cmd, args) {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } });
    let err = '';
    p.stderr.on('data', (d) => { err = (err + d).slice(-4000); });
    p.on('exit', (code, sig) => { if (this.procs.get(name) === p && !this.stopping) console.error(`${name} exited (${code ?? sig}): ${err}`); });
    this.procs.set(name, p);
    return p;
  }

  pid(name) { return this.procs.get(name)?.pid; }

  /** An API request with the bearer token. */
  api(path, init = {}) {
    return fetch(`${this.url}${path}`, { ...init, headers: { Authorization: `Bearer ${this.token}`, ...(init.headers ?? {}) } });
  }

  async stop() {
    this.stopping = true;
    for (const [, p] of this.procs) p.kill('SIGTERM');
    await sleep(300);
    for (const [, p] of this.procs) if (p.exitCode === null) p.kill('SIGKILL');
    if (!process.env.KEEP_DATA) rmSync(this.data, { recursive: true, force: true });
  }
}

/** Headless Debian chromium. Under CI=true a missing browser fails. */
export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`);
  const profile = mkdtempSync(join(tmpdir(), 'kodama-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1280, height: 800 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
  });
  const close = async () => { await context.close().catch(() => {}); rmSync(profile, { recursive: true, force: true }); };
  return { context, close };
}

export function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

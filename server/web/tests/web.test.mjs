// The web app in headless chromium against a real server with a simulated
// camera: accounts and security, live video, timeline, thumbnails,
// playback, export, phone layout. One server for the whole file, so the
// ~1 min of recordings the later tests need is made while earlier ones run.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Rig, launchBrowser, until, sleep, percentile } from './harness.mjs';

const rig = new Rig();
let browser;
let page;
let gap; // [start, end] ms of the server's downtime
const shots = process.env.KODAMA_SCREENSHOTS;

before(async () => {
  // Two cameras (synced playback); the synthetic picture shows motion for
  // 3 s of every 12, so there are motion events to list. The second camera
  // is small: it only has to be recorded. The first has a (synthetic)
  // microphone.
  await rig.start({ cameras: 2, motion: { every_s: 12, for_s: 3 }, secondary: { width: 320, height: 240, fps: 15 }, audio: true });
  // Record a little, then take the server down for a few seconds: the
  // timeline must show that gap.
  await sleep(6000);
  // The camera is frozen too: otherwise it buffers the downtime and uploads
  // it afterwards (store-and-forward), and there is no gap to show.
  const down = Date.now();
  rig.procs.get('cam-1').kill('SIGSTOP');
  await rig.stopServer();
  await sleep(4000);
  await rig.startServer();
  rig.procs.get('cam-1').kill('SIGCONT');
  gap = [down, Date.now()];
  await until('camera back online', async () => (await (await rig.api('/api/v1/cameras')).json()).cameras.some((c) => c.online), 30000);
  browser = await launchBrowser();
  page = await browser.context.newPage();
  page.on('pageerror', (e) => console.error('page error:', e.message));
}, { timeout: 120000 });

after(async () => {
  await browser?.close();
  await rig.stop();
});

function upgrade(path, headers = {}) {
  const u = new URL(rig.url);
  return new Promise((res, rej) => {
    const req = request({ host: u.hostname, port: u.port, path, headers: {
      Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers } });
    req.on('upgrade', (r, socket) => { socket.destroy(); res(r.statusCode); });
    req.on('response', (r) => { r.resume(); res(r.statusCode); });
    req.on('error', rej);
    req.end();
  });
}

const cam = () => rig.cameraIds[0];

test('API and WebSocket refuse requests without a session', async () => {
  const r = await fetch(`${rig.url}/api/v1/cameras`);
  assert.equal(r.status, 401);
  assert.equal((await r.json()).error, 'missing_token');
  assert.equal((await fetch(`${rig.url}/api/v1/segments/1`)).status, 401);
  assert.equal(await upgrade(`/api/v1/cameras/${cam()}/live`), 401);
  // With the bearer token but from another site's page: refused.
  assert.equal(await upgrade(`/api/v1/cameras/${cam()}/live`, { Authorization: `Bearer ${rig.token}`, Origin: 'http://evil.example' }), 403);
  assert.equal(await upgrade(`/api/v1/cameras/${cam()}/live`, { Authorization: `Bearer ${rig.token}` }), 101);
});

test('first-run setup creates the admin, then login works', async () => {
  assert.ok(rig.setupLink, 'the server printed a setup link');
  await page.goto(rig.setupLink);
  await page.getByLabel('Name').fill('owner');
  await page.getByLabel('Password').fill('correct horse battery');
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.locator('.tile').first().waitFor({ timeout: 15000 });
  const cookies = await browser.context.cookies();
  const c = cookies.find((x) => x.name === 'kodama_session');
  assert.ok(c && c.httpOnly && c.sameSite === 'Lax', JSON.stringify(c));
  // The link is spent.
  const again = await page.evaluate(async (link) => {
    const token = new URL(link).hash.split('setup=')[1];
    const r = await fetch('/api/v1/setup', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token, name: 'x', password: 'whatever123' }) });
    return r.status;
  }, rig.setupLink);
  assert.equal(again, 403);
  // A mutation without the CSRF token is refused even with the cookie.
  const noCsrf = await page.evaluate(async () => (await fetch('/api/v1/accounts', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"name":"a","role":"viewer","password":"aaaaaaaa"}' })).status);
  assert.equal(noCsrf, 403);
  // Log out, log back in through the form.
  await page.getByText('owner', { exact: true }).click();
  await page.getByRole('button', { name: 'Log out', exact: true }).click();
  await page.getByRole('button', { name: 'Log in' }).waitFor();
  await page.getByLabel('Name').fill('owner');
  await page.getByLabel('Password').fill('correct horse battery');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('.tile').first().waitFor({ timeout: 15000 });
});

async function csrfFetch(p, path, init) {
  return p.evaluate(async ([path, init]) => {
    const s = await (await fetch('/api/v1/session')).json();
    const r = await fetch(path, { ...init, headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf } });
    return { status: r.status, body: await r.text() };
  }, [path, init]);
}

test('a wrong password is refused and repeated failures are slowed', async () => {
  const login = (name, password) => fetch(`${rig.url}/api/v1/login`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name, password }) });
  const statuses = [];
  for (let i = 0; i < 5; i++) statuses.push((await login('owner', `wrong ${i}`)).status);
  assert.deepEqual(statuses.slice(0, 4), [401, 401, 401, 401]);
  assert.equal(statuses[4], 429, 'the fifth attempt in a row must wait');
  const r = await login('owner', 'correct horse battery');
  assert.equal(r.status, 429, 'even the right password waits out the delay');
  assert.ok(Number(r.headers.get('retry-after')) >= 1);
  await sleep(Number(r.headers.get('retry-after')) * 1000 + 100);
  assert.equal((await login('owner', 'correct horse battery')).status, 200);
});

test('a viewer account cannot rename or remove a camera', async () => {
  const created = await csrfFetch(page, '/api/v1/accounts', { method: 'POST', body: JSON.stringify({ name: 'family', role: 'viewer', password: 'family pass 1' }) });
  assert.equal(created.status, 200, created.body);
  // A separate cookie jar: a second browser.
  const { chromium } = await import('playwright-core');
  const vb = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
  try {
    const vp = await (await vb.newContext()).newPage();
    await vp.goto(rig.url + '/');
    await vp.getByLabel('Name').fill('family');
    await vp.getByLabel('Password').fill('family pass 1');
    await vp.getByRole('button', { name: 'Log in' }).click();
    await vp.locator('.tile').first().waitFor({ timeout: 15000 });
    await vp.goto(`${rig.url}/#/camera/${cam()}`);
    await vp.locator('.health dt').first().waitFor();
    assert.equal(await vp.getByRole('button', { name: 'Rename' }).count(), 0);
    assert.equal(await vp.getByRole('button', { name: 'Remove' }).count(), 0);
    const rename = await csrfFetch(vp, `/api/v1/cameras/${cam()}/rename`, { method: 'POST', body: '{"name":"hacked"}' });
    assert.equal(rename.status, 403, rename.body);
    const remove = await csrfFetch(vp, `/api/v1/cameras/${cam()}`, { method: 'DELETE' });
    assert.equal(remove.status, 403, remove.body);
    const accounts = await csrfFetch(vp, '/api/v1/accounts', { method: 'GET' });
    assert.equal(accounts.status, 403);
  } finally {
    await vb.close();
  }
  // The allowlist is untouched.
  const list = execFileSync(rig.server()[0], [...rig.server().slice(1), 'allow', 'list']).toString();
  assert.match(list, /cam-1/);
});

test('the live tile plays and stays within 1 s of live for a minute', { timeout: 120000 }, async () => {
  await page.goto(`${rig.url}/#/`);
  await page.reload();
  const t0 = Date.now();
  await until('first frame', () => page.evaluate(() => [...(window.__kodama?.players ?? [])].some((p) => p.stats.framesShown > 0)), 15000, 50);
  const firstFrameMs = Date.now() - t0;
  const sample = () => page.evaluate(() => {
    const p = [...window.__kodama.players][0];
    return { frames: p.stats.framesShown, time: p.video.currentTime, lat: p.stats.latencies.slice(), drops: p.stats.drops, jumps: p.stats.jumps };
  });
  await sleep(2000); // settle: the first GOP arrives as a burst
  const start = await sample();
  const perSecond = [];
  let prev = start;
  for (let i = 0; i < 60; i++) {
    await sleep(1000);
    const s = await sample();
    perSecond.push({ frames: s.frames - prev.frames, advanced: s.time - prev.time, lat: s.lat.slice(-10) });
    prev = s;
  }
  const lat = prev.lat.slice(-prev.frames + start.frames);
  const p50 = percentile(lat, 50), p99 = percentile(lat, 99);
  const tile = page.locator(`[data-camera="${cam()}"]`);
  const audio = await tile.evaluate((el) => ({ bytes: el.querySelector('video').webkitAudioDecodedByteCount, muted: el.querySelector('video').muted }));
  console.log(`live: first frame ${firstFrameMs} ms after load, ${prev.frames - start.frames} frames in 60 s, latency p50 ${p50.toFixed(0)} ms p99 ${p99.toFixed(0)} ms, drops ${prev.drops} jumps ${prev.jumps}, audio ${audio.bytes} bytes decoded`);
  assert.ok(prev.frames - start.frames > 60 * 20, 'at least 20 decoded frames per second');
  assert.ok(perSecond.every((s) => s.frames > 0 && s.advanced > 0), `frames every second and currentTime advances: ${JSON.stringify(perSecond.filter((s) => !(s.frames > 0 && s.advanced > 0)))}`);
  assert.ok(p99 < 1000, `p99 latency ${p99} ms must stay under 1 s`);
  // The camera's microphone: the tile decodes its audio (muted), and the
  // sound control unmutes it.
  assert.ok(audio.bytes > 0 && audio.muted, `live audio decoded while muted: ${JSON.stringify(audio)}`);
  await tile.locator('button.sound').click();
  assert.equal(await tile.evaluate((el) => el.querySelector('video').muted), false, 'the sound control unmutes');
  await tile.locator('button.sound').click();
  if (shots) { mkdirSync(shots, { recursive: true }); await page.screenshot({ path: join(shots, 'live-grid.png') }); }
});

test('the timeline shows the gap where the server was down, and scrub thumbnails', async () => {
  const mid = (gap[0] + gap[1]) / 2;
  const span = 120000;
  await page.goto(`${rig.url}/#/recordings?cams=${cam()}&t=${new Date(mid).toISOString()}&span=${span}`);
  const tl = page.locator('.timeline');
  await until('timeline data', async () => (await tl.getAttribute('data-loaded')) !== null, 10000);
  // API: the index's gaps around the downtime. (A camera that buffered
  // through it uploads the missed video afterwards, so the gap may be only
  // the time before recording began.)
  const r = await (await rig.api(`/api/v1/cameras/${cam()}/recordings?start=${new Date(gap[0] - 30000).toISOString()}&end=${new Date(gap[1] + 5000).toISOString()}`)).json();
  const apiGap = r.gaps.map((g) => [Date.parse(g.start), Date.parse(g.end)]).find(([a, b]) => b - a >= 3000);
  assert.ok(apiGap, `the index has a gap: ${JSON.stringify(r.gaps)}`);
  const inGap = apiGap[0] + (apiGap[1] - apiGap[0]) * 0.5;
  const seg = r.segments.map((x) => [Date.parse(x.start), Date.parse(x.end)]).find(([a, b]) => b - a >= 3000);
  const inRec = seg[0] + 1500;
  // The canvas: the gap colour at the downtime, the recorded colour before it.
  const colours = await page.evaluate(([mid, before]) => {
    const c = document.querySelector('.timeline-canvas');
    const g = c.getContext('2d');
    const LABEL_W = 88, AXIS_H = 22, ROW_H = 28;
    const [t0, t1] = window.__kodamaTimelineRange();
    const w = c.clientWidth;
    const px = (t) => Math.round((LABEL_W + ((t - t0) / (t1 - t0)) * (w - LABEL_W)) * (c.width / w));
    const y = Math.round((AXIS_H + ROW_H / 2) * (c.height / c.clientHeight));
    const at = (t) => Array.from(g.getImageData(px(t), y, 1, 1).data.slice(0, 3));
    return { gap: at(mid), recorded: at(before) };
  }, [inGap, inRec]);
  assert.deepEqual(colours.gap, [0x3a, 0x1f, 0x24], 'gap colour where nothing was recorded');
  assert.deepEqual(colours.recorded, [0x2f, 0x9e, 0x6e], 'recorded colour in a segment');
  // Scrub: hovering over a recorded moment shows its thumbnail.
  const box = await page.locator('.timeline-canvas').boundingBox();
  const [t0, t1] = await page.evaluate(() => window.__kodamaTimelineRange());
  const xAt = (t) => box.x + 88 + ((t - t0) / (t1 - t0)) * (box.width - 88);
  await page.mouse.move(xAt(inRec), box.y + 22 + 14);
  await until('thumbnail', () => page.evaluate(() => {
    const img = document.querySelector('.scrub-preview img');
    return img && img.complete && img.naturalWidth === 192 && !document.querySelector('.scrub-preview').hidden;
  }), 15000);
  if (shots) await page.screenshot({ path: join(shots, 'timeline.png') });
});

test('a recorded minute plays', { timeout: 60000 }, async () => {
  // The first minute-long segment: from the start of recording.
  const now = Date.now();
  const r = await (await rig.api(`/api/v1/cameras/${cam()}/recordings?start=${new Date(now - 3600e3).toISOString()}&end=${new Date(now).toISOString()}`)).json();
  const seg = r.segments.filter((s) => !s.recording).sort((a, b) => (Date.parse(b.end) - Date.parse(b.start)) - (Date.parse(a.end) - Date.parse(a.start)))[0] ?? r.segments[0];
  const t = Date.parse(seg.start);
  await page.goto(`${rig.url}/#/recordings?cams=${cam()}&t=${new Date(t + 500).toISOString()}&span=300000`);
  await until('playback started', () => page.evaluate(() => window.__kodamaPlayback?.players?.[0]?.readyState >= 2), 15000);
  const a = await page.evaluate(() => ({ ...window.__kodamaPlayback.players[0] }));
  // Play the rest of the segment at 8x (the speed menu) and count
  // presented frames.
  await page.locator('select[aria-label="Speed"]').selectOption('8');
  const result = await page.evaluate(async () => {
    const v = document.querySelector('.play-tile video');
    let frames = 0;
    const count = () => { frames++; v.requestVideoFrameCallback(count); };
    v.requestVideoFrameCallback(count);
    const from = v.currentTime;
    await new Promise((res) => { v.addEventListener('ended', res, { once: true }); setTimeout(res, 20000); });
    return { frames, from, to: v.currentTime, duration: v.duration, error: v.error?.code ?? null, audioBytes: v.webkitAudioDecodedByteCount };
  });
  console.log(`playback: ${JSON.stringify(result)}`);
  assert.equal(result.error, null);
  assert.ok(a.wall !== null && Math.abs(a.wall - (t + 500)) < 4000, `started at the chosen time: ${JSON.stringify(a)}`);
  assert.ok(result.duration >= Math.min(50, (Date.parse(seg.end) - t) / 1000 - 1), `segment duration ${result.duration}`);
  assert.ok(result.to >= result.duration - 0.5, `played to the end: ${JSON.stringify(result)}`);
  assert.ok(result.frames > 20, 'frames were presented');
  assert.ok(result.audioBytes > 0, 'the recording\'s audio was decoded');
  assert.ok(await page.locator(`.play-tile[data-camera="${cam()}"] button.sound`).isVisible(), 'the sound control is offered');
});

test('an export downloads and ffprobe accepts it with the expected duration', async () => {
  const now = Date.now();
  const start = new Date(now - 40000);
  await page.goto(`${rig.url}/#/recordings?cams=${cam()}&t=${start.toISOString()}&span=300000`);
  await page.locator('select[aria-label="Export length"]').selectOption('30');
  await until('clock placed', () => page.evaluate(() => window.__kodamaPlayback?.time !== undefined), 10000);
  await page.evaluate(() => document.querySelector('.recordings button.primary')?.textContent === 'Pause' && document.querySelector('.recordings button.primary').click());
  await page.getByRole('button', { name: 'Export from playhead' }).click();
  const href = await page.locator('.export-links a').first().getAttribute('href');
  const q = new URL(href, rig.url).searchParams;
  const wanted = (Date.parse(q.get('end')) - Date.parse(q.get('start'))) / 1000;
  assert.equal(wanted, 30, `the export link asks for the chosen length: ${href}`);
  const [download] = await Promise.all([page.waitForEvent('download'), page.locator('.export-links a').first().click()]);
  const file = join(rig.data, 'export.mp4');
  await download.saveAs(file);
  const probe = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'format=duration:stream=codec_name', '-of', 'json', file]).toString());
  const duration = Number(probe.format.duration);
  console.log(`export: ${duration.toFixed(2)} s, ${probe.streams[0].codec_name}`);
  assert.equal(probe.streams[0].codec_name, 'h264');
  // From the keyframe at or before the start (≤ 1 s GOPs) to start + 30 s.
  if (!(duration >= 29 && duration <= 31.5)) {
    const r = await (await rig.api(`/api/v1/cameras/${cam()}/recordings?start=${new Date(Date.parse(q.get('start')) - 60000).toISOString()}&end=${q.get('end')}`)).json();
    console.log(`export ${href} lasts ${duration} s; recordings: ${JSON.stringify(r)}`);
  }
  assert.ok(duration >= 29 && duration <= 31.5, `duration ${duration}`);
});

test('two cameras play recordings in sync', { timeout: 60000 }, async () => {
  const [a, b] = rig.cameraIds;
  const t = Date.now() - 20000;
  await page.goto(`${rig.url}/#/recordings?cams=${a},${b}&t=${new Date(t).toISOString()}&span=300000`);
  await until('both playing', () => page.evaluate(() => {
    const p = window.__kodamaPlayback?.players;
    return p?.length === 2 && p.every((x) => x.readyState >= 2 && x.wall !== null && !x.idle);
  }), 20000);
  const samples = [];
  for (let i = 0; i < 8; i++) {
    await sleep(500);
    samples.push(await page.evaluate(() => window.__kodamaPlayback.players.map((x) => ({ camera: x.camera, wall: x.wall }))));
  }
  const skews = samples.map(([x, y]) => Math.abs(x.wall - y.wall));
  console.log(`multi-camera playback skew ms: ${skews.map((s) => Math.round(s)).join(' ')}`);
  assert.deepEqual(samples[0].map((x) => x.camera), [a, b], 'one player per chosen camera');
  assert.ok(skews.every((s) => s < 500), `the two cameras stay within 0.5 s of each other: ${skews}`);
  const advanced = samples.at(-1).map((x, i) => x.wall - samples[0][i].wall);
  assert.ok(advanced.every((d) => d > 2000), `both advance with the clock: ${advanced}`);
});

test('the events list shows motion events with thumbnails, and one plays from before it', { timeout: 60000 }, async () => {
  await page.goto(`${rig.url}/#/events`);
  await page.locator('select[aria-label="Period"]').selectOption('1');
  await until('a motion event with its thumbnail', () => page.evaluate(() => {
    const img = document.querySelector('ol.events li img');
    return img && img.complete && img.naturalWidth === 192;
  }), 30000, 1000);
  const when = await page.locator('ol.events li').first().textContent();
  await page.locator('ol.events li button.event').first().click();
  await until('the recordings page', () => page.evaluate(() => location.hash.startsWith('#/recordings')), 5000);
  const t = Date.parse(new URL(page.url().replace('#/', '')).searchParams.get('t'));
  await until('playback started', () => page.evaluate(() => window.__kodamaPlayback?.players?.[0]?.readyState >= 2), 15000);
  // The API's newest event for the camera it opened: playback starts 5 s
  // before it.
  const camId = new URL(page.url().replace('#/', '')).searchParams.get('cams');
  const ev = await (await rig.api(`/api/v1/cameras/${camId}/events?start=${new Date(Date.now() - 3600e3).toISOString()}&end=${new Date().toISOString()}`)).json();
  const starts = ev.items.filter((i) => i.data.event !== 'motion_end').map((i) => Date.parse(i.time));
  assert.ok(starts.length > 0, `events recorded: ${JSON.stringify(ev.items)}`);
  assert.ok(starts.some((s) => Math.abs(s - 5000 - t) < 1000), `opened 5 s before an event (${when}): t=${t}, events=${starts}`);
});

test('the camera page shows health and the GPS track', async () => {
  await page.goto(`${rig.url}/#/camera/${cam()}`);
  await until('health', async () => (await page.locator('.health').textContent()).includes('online'), 10000);
  await until('telemetry', async () => /°C|%/.test(await page.locator('.health').textContent()), 15000);
  const text = await page.locator('.health').textContent();
  assert.match(text, /Signal-?\d+ dBm|Signal.*dBm/);
  assert.match(text, /Firmware/);
  await until('map drawn', () => page.evaluate(() => {
    const c = document.querySelector('canvas.map');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    // Some track-coloured pixels (#4fc3f7).
    for (let i = 0; i < d.length; i += 4) if (d[i] === 0x4f && d[i + 1] === 0xc3 && d[i + 2] === 0xf7) return true;
    return false;
  }), 15000);
  if (shots) await page.screenshot({ path: join(shots, 'camera.png'), fullPage: true });
});

test('the layout works on a 390x844 phone screen', async () => {
  const phone = await browser.context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  for (const route of ['#/', `#/recordings?cams=${cam()}`, `#/camera/${cam()}`, '#/events']) {
    await phone.goto(`${rig.url}/${route}`);
    await phone.locator('main > *').first().waitFor();
    await sleep(500);
    const m = await phone.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      nav: document.querySelector('header nav')?.getBoundingClientRect().width ?? 0,
      widest: Math.max(...[...document.querySelectorAll('main *')].map((e) => e.getBoundingClientRect().right)),
    }));
    assert.ok(m.scroll <= 390, `${route}: page scrolls sideways (${m.scroll} px)`);
    assert.ok(m.widest <= 391, `${route}: an element overflows (${m.widest} px)`);
    assert.ok(m.nav > 0, `${route}: navigation visible`);
  }
  await phone.goto(`${rig.url}/#/`);
  await until('phone live frame', () => phone.evaluate(() => [...window.__kodama.players].some((p) => p.stats.framesShown > 5)), 15000);
  if (shots) await phone.screenshot({ path: join(shots, 'phone.png') });
  await phone.close();
});


test('an admin renames and removes (revokes) a camera', async () => {
  await page.goto(`${rig.url}/#/camera/${cam()}`);
  await page.locator('.health dt').first().waitFor();
  page.once('dialog', (d) => d.accept('porch'));
  await page.getByRole('button', { name: 'Rename' }).click();
  await until('renamed in the allowlist', () => /porch/.test(execFileSync(rig.server()[0], [...rig.server().slice(1), 'allow', 'list']).toString()), 10000);
  page.once('dialog', (d) => d.accept());
  await page.getByRole('button', { name: 'Remove' }).click();
  await until('off the allowlist', () => !execFileSync(rig.server()[0], [...rig.server().slice(1), 'allow', 'list']).toString().includes(cam()), 10000);
  // Removing it again is a clear 404.
  const again = await csrfFetch(page, `/api/v1/cameras/${cam()}`, { method: 'DELETE' });
  assert.equal(again.status, 404, again.body);
});

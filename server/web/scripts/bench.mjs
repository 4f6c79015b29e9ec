// Web app figures in headless chromium against a real server with one
// simulated camera (640x480, 30 fps): time to first frame (median and max
// of 10 page loads), capture-to-display latency p50/p99 over a minute, and
// server CPU per browser viewer (CPU with 4 viewers minus CPU with none,
// over 20 s each). Figures, never pass/fail.

import { readFileSync } from 'node:fs';
import { Rig, launchBrowser, until, sleep, percentile } from '../tests/harness.mjs';

const quick = process.argv.includes('--quick');
const ticks = () => {
  const f = readFileSync(`/proc/${rig.pid('server')}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime, in clock ticks (100/s)
};
const rig = new Rig();
await rig.start({ cameras: 1 });
const browser = await launchBrowser();
try {
  // An account to log in with.
  const page = await browser.context.newPage();
  await page.goto(rig.setupLink);
  await page.getByLabel('Name').fill('bench');
  await page.getByLabel('Password').fill('bench password');
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.locator('.tile').first().waitFor();
  const cam = rig.cameraIds[0];
  const loads = quick ? 3 : 10;
  const ttff = [];
  for (let i = 0; i < loads; i++) {
    await page.goto('about:blank');
    await page.goto(`${rig.url}/#/camera/${cam}`);
    // performance.now() at the first presented frame = ms since navigation start.
    const t = await until('first frame', () => page.evaluate(() => [...(window.__kodama?.players ?? [])].map((p) => p.stats.firstFrameAt).find((x) => x !== null)), 15000, 20);
    ttff.push(t);
  }
  const minute = quick ? 15 : 60;
  await sleep(2000);
  await page.evaluate(() => { for (const p of window.__kodama.players) p.stats.latencies.length = 0; });
  await sleep(minute * 1000);
  const lat = await page.evaluate(() => [...window.__kodama.players][0].stats.latencies.slice());
  await page.goto('about:blank');

  const window_s = quick ? 8 : 20;
  await sleep(1000);
  let a = ticks();
  await sleep(window_s * 1000);
  const idle = (ticks() - a) / window_s; // ticks/s = % of one core
  const viewers = [];
  for (let i = 0; i < 4; i++) {
    const p = await browser.context.newPage();
    await p.goto(`${rig.url}/#/camera/${cam}`);
    viewers.push(p);
  }
  await sleep(3000);
  a = ticks();
  await sleep(window_s * 1000);
  const busy = (ticks() - a) / window_s;
  const med = percentile(ttff, 50);
  console.log(`web app (headless chromium, loopback, 1 camera 640x480@30 fps ~800 kbit/s, ${process.env.KODAMA_PROFILE ?? 'debug'} build)`);
  console.log(`  time to first frame: median ${med.toFixed(0)} ms, max ${Math.max(...ttff).toFixed(0)} ms over ${loads} page loads`);
  console.log(`  capture-to-display latency over ${minute} s: p50 ${percentile(lat, 50).toFixed(0)} ms, p99 ${percentile(lat, 99).toFixed(0)} ms (${lat.length} frames)`);
  console.log(`  server CPU: ${idle.toFixed(1)}% of a core with no browser, ${busy.toFixed(1)}% with 4 live viewers: ${((busy - idle) / 4).toFixed(2)}% per viewer`);
} finally {
  await browser.close();
  await rig.stop();
}

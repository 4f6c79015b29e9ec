// The live grid and the single-camera page (full-screen live view with its
// latency, health from telemetry, GPS track, rename/remove for admins).

import { api, Camera, Telemetry, AuxItem } from '../api';
import { h, ago, fmtBytes, soundButton } from '../dom';
import { LivePlayer, VisibilityPauser, liveSupported } from '../live';
import { drawTrack } from '../map';
import { go } from '../types';
import type { Ctx, View } from '../types';

function tile(cam: Camera, pauser: VisibilityPauser, big: boolean): { el: HTMLElement; player: LivePlayer } {
  const video = h('video', { muted: true, playsInline: true, autoplay: true });
  const state = h('span.badge', null, cam.online ? 'connecting' : 'offline');
  const latency = h('span.latency');
  const sound = soundButton(video);
  const player = new LivePlayer(cam.id, video, (s) => {
    state.textContent = s;
    state.dataset.state = s;
  }, (audio) => { sound.hidden = !audio; });
  const el = h(big ? 'div.live-big' : 'a.tile', big ? null : { href: `#/camera/${encodeURIComponent(cam.id)}` },
    video, h('div.tile-bar', null, h('strong', null, cam.name), state, latency, sound));
  el.dataset.camera = cam.id;
  const t = window.setInterval(() => {
    if (!el.isConnected) { window.clearInterval(t); return; }
    if (player.stats.framesShown > 0) latency.textContent = `${Math.round(player.latencyMs)} ms`;
  }, 500);
  pauser.watch(player);
  return { el, player };
}

export function liveGridView(ctx: Ctx): View {
  const pauser = new VisibilityPauser();
  if (!liveSupported()) return { el: h('p.error', null, 'This browser cannot play live video (no Media Source Extensions).') };
  const grid = h('section.grid', { 'aria-label': 'Live cameras' },
    ctx.cameras.map((c) => tile(c, pauser, false).el));
  const el = h('div', null,
    ctx.cameras.length === 0
      ? h('div.empty', null, h('h2', null, 'No cameras yet'), h('p', null, 'Pair a camera with `kodama-server allow add <camera-node-id> --camera`; it appears here when it connects.'))
      : grid);
  return { el, dispose: () => pauser.dispose() };
}

function fmt(v: number | null | undefined, unit: string, digits = 0): string {
  return v === null || v === undefined ? '—' : `${v.toFixed(digits)} ${unit}`;
}

export function cameraView(ctx: Ctx, id: string): View {
  const cam = ctx.cameras.find((c) => c.id === id || c.name === id);
  if (!cam) return { el: h('div.empty', null, h('h2', null, 'Unknown camera'), h('a', { href: '#/' }, 'Back to the live grid')) };
  const pauser = new VisibilityPauser();
  const live = tile(cam, pauser, true);
  const full = h('button', { onclick: () => void live.el.requestFullscreen?.().catch(() => undefined) }, 'Full screen');
  const health = h('dl.health');
  const mapCanvas = h('canvas.map', { 'aria-label': 'GPS track' });
  const mapBox = h('div.map-box', null, mapCanvas);
  const admin = ctx.session.account.role === 'admin' ? h('div.admin', null,
    h('button', { onclick: async () => {
      const name = prompt('New name for this camera', cam.name);
      if (!name) return;
      try { await api.rename(cam.id, name); location.reload(); } catch (e) { alert((e as Error).message); }
    } }, 'Rename'),
    h('button.danger', { onclick: async () => {
      if (!confirm(`Remove ${cam.name}? It will be refused until paired again. Its recordings stay.`)) return;
      try { await api.remove(cam.id); go('/'); } catch (e) { alert((e as Error).message); }
    } }, 'Remove')) : null;

  const row = (k: string, v: string) => [h('dt', null, k), h('dd', null, v)];
  async function refresh(): Promise<void> {
    const now = new Date();
    const [status, tel] = await Promise.all([
      api.status(cam!.id).catch(() => null),
      api.telemetry(cam!.id, new Date(now.getTime() - 86_400_000), now).catch(() => null),
    ]);
    const items: AuxItem<Telemetry>[] = tel?.items ?? [];
    const last = items[items.length - 1]?.data;
    const lastSeen = status?.last_seen ?? cam!.last_seen;
    const signal = last?.modem?.signal_dbm;
    const storage = last?.storage;
    health.replaceChildren(...[
      row('Status', status?.online ?? cam!.online ? 'online' : 'offline'),
      row('Last seen', lastSeen ? ago(new Date(lastSeen)) : '—'),
      row('Link', last?.link?.kind ? `${last.link.kind}${last.link.iface ? ` (${last.link.iface})` : ''}` : '—'),
      row('Signal', signal !== undefined && signal !== null ? `${signal} dBm${last?.modem?.technology ? ` ${last.modem.technology}` : ''}` : '—'),
      row('Bitrate', fmt(last?.bitrate_kbps ?? status?.bitrate_kbps, 'kbit/s')),
      row('Tier', last?.stream?.tier ? `${last.stream.tier} · ${last.stream.limit ?? 'auto'}${typeof last.stream.estimate_kbps === 'number' ? ` · link ≈ ${last.stream.estimate_kbps} kbit/s` : ''}` : '—'),
      row('Uplink', last?.stream?.uplink ?? '—'),
      row('CPU', fmt(last?.cpu_percent, '%')),
      row('Temperature', fmt(last?.soc_temp_c, '°C', 1)),
      row('Camera process', last?.process ? `${(last.process.rss_kib / 1024).toFixed(1)} MiB${typeof last.process.cpu_percent === 'number' ? ` · CPU ${last.process.cpu_percent.toFixed(0)} %` : ''}` : '—'),
      row('Storage', storage ? `${fmtBytes(storage.free_bytes)} free of ${fmtBytes(storage.total_bytes)}` : '—'),
      row('Firmware', status?.firmware || '—'),
      row('Video', status ? `${status.width}×${status.height} @ ${status.fps} fps` : '—'),
    ].flat());
    const track = items.map((i) => i.data.gnss).filter((g): g is { lat: number; lon: number } => typeof g?.lat === 'number' && typeof g?.lon === 'number');
    drawTrack(mapBox, mapCanvas, track, ctx.session.map_tile_url);
  }
  void refresh();
  const timer = window.setInterval(() => void refresh(), 10_000);
  const latencyLine = h('p.muted.latency-line');
  const lt = window.setInterval(() => {
    const s = live.player.stats;
    if (s.framesShown) latencyLine.textContent = `capture → display ${Math.round(live.player.latencyMs)} ms · ${s.framesShown} frames · ${s.drops + s.jumps} skips`;
  }, 500);
  const el = h('div.camera-page', null,
    h('div.camera-head', null, h('h2', null, cam.name), h('div.actions', null, full,
      h('a.button', { href: `#/recordings?cams=${encodeURIComponent(cam.id)}` }, 'Recordings'), admin)),
    live.el, latencyLine,
    h('div.panels', null,
      h('section.panel', null, h('h3', null, 'Health'), health),
      h('section.panel', null, h('h3', null, 'Position (last 24 h)'), mapBox)));
  return { el, dispose: () => { pauser.dispose(); window.clearInterval(timer); window.clearInterval(lt); } };
}

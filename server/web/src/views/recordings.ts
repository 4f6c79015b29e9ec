// Recordings: the timeline of the chosen cameras, synchronised playback
// from any point, jump to a date and time, and export of a range.

import { api } from '../api';
import { h, fmtDateTime, hasAudio, soundButton } from '../dom';
import { Timeline } from '../timeline';
import { SegmentPlayer, SyncClock } from '../playback';
import type { Ctx, View } from '../types';

function toLocalInput(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function recordingsView(ctx: Ctx): View {
  const wanted = (ctx.params.get('cams') ?? '').split(',').filter(Boolean);
  let chosen = ctx.cameras.filter((c) => wanted.length === 0 || wanted.includes(c.id) || wanted.includes(c.name));
  const tParam = ctx.params.get('t');
  const start = tParam ? Date.parse(tParam) : Date.now() - 60_000;
  const spanParam = Number(ctx.params.get('span') ?? 0);
  const span = spanParam > 0 ? spanParam : 3_600_000;
  const timeline = new Timeline(chosen.map((c) => ({ id: c.id, name: c.name })), start - span / 2, start + span / 2);
  timeline.setPlayhead(start, false);

  const videos = h('div.playback-grid');
  let players: SegmentPlayer[] = [];
  let clock: SyncClock | null = null;
  const clockLabel = h('span.clock', { 'aria-live': 'off' });
  const playBtn = h('button.primary', { onclick: () => { if (!clock) return; if (clock.playing) clock.pause(); else clock.play(); playBtn.textContent = clock.playing ? 'Pause' : 'Play'; } }, 'Play');

  const speed = h('select', { 'aria-label': 'Speed', onchange: () => clock?.setRate(Number(speed.value)) },
    ...[1, 2, 4, 8, 16].map((r) => h('option', { value: r, selected: r === 1 }, `${r}×`)));

  function buildPlayers(): void {
    clock?.dispose();
    videos.replaceChildren();
    players = chosen.map((c) => {
      const v = h('video', { muted: true, playsInline: true, controls: false });
      const state = h('span.badge');
      const sound = soundButton(v);
      // Shown once the browser has seen sound in the recording.
      const reveal = () => { if (hasAudio(v)) { sound.hidden = false; v.removeEventListener('timeupdate', reveal); } };
      v.addEventListener('timeupdate', reveal);
      const p = new SegmentPlayer(c.id, v, (s) => { state.textContent = s; state.dataset.state = s; });
      videos.append(h('div.play-tile', { dataset: { camera: c.id } }, v, h('div.tile-bar', null, h('strong', null, c.name), state, sound)));
      return p;
    });
    clock = new SyncClock(players, timeline.playhead);
    clock.setRate(Number(speed.value));
    clock.onTick = (t) => {
      clockLabel.textContent = fmtDateTime(new Date(t));
      timeline.setPlayhead(t);
      (window as unknown as { __kodamaPlayback?: unknown }).__kodamaPlayback = { time: t, players: players.map((p) => ({ camera: p.cameraId, wall: p.wallTime, idle: p.idle, currentTime: p.video.currentTime, readyState: p.video.readyState })) };
    };
    void clock.seek(timeline.playhead).then(() => { clock?.play(); playBtn.textContent = 'Pause'; });
  }
  timeline.onSeek = (t) => { void clock?.seek(t); };
  // For the browser tests: the range the canvas shows.
  (window as unknown as { __kodamaTimelineRange?: () => [number, number] }).__kodamaTimelineRange = () => [timeline.t0, timeline.t1];

  const picker = h('div.cam-picker', null, ctx.cameras.map((c) => {
    const box = h('input', { type: 'checkbox', checked: chosen.includes(c) });
    box.addEventListener('change', () => {
      chosen = ctx.cameras.filter((x) => x === c ? box.checked : chosen.includes(x));
      timeline.setCameras(chosen.map((x) => ({ id: x.id, name: x.name })));
      buildPlayers();
    });
    return h('label.chip', null, box, c.name);
  }));

  const when = h('input', { type: 'datetime-local', step: 1, value: toLocalInput(new Date(start)), 'aria-label': 'Jump to date and time' });
  const jump = h('form.jump', { onsubmit: (e: Event) => {
    e.preventDefault();
    const t = new Date(when.value).getTime();
    if (Number.isNaN(t)) return;
    timeline.setRange(t - timeline.span / 2, t + timeline.span / 2);
    void clock?.seek(t);
  } }, when, h('button', { type: 'submit' }, 'Go'));

  const zoom = h('div.zoom', null,
    h('button', { onclick: () => timeline.zoom(0.5), 'aria-label': 'Zoom in' }, '+'),
    h('button', { onclick: () => timeline.zoom(2), 'aria-label': 'Zoom out' }, '−'),
    ...([['1 min', 60e3], ['1 h', 3600e3], ['1 day', 86_400e3]] as const).map(([l, s]) =>
      h('button', { onclick: () => timeline.setRange(timeline.playhead - s / 2, timeline.playhead + s / 2) }, l)),
    h('button', { onclick: () => { const t = Date.now() - 5000; timeline.setRange(t - timeline.span * 0.9, t + timeline.span * 0.1); void clock?.seek(t); } }, 'Now'));

  const exportLen = h('select', { 'aria-label': 'Export length' },
    ...([['30 s', 30], ['1 min', 60], ['5 min', 300], ['15 min', 900], ['1 h', 3600]] as const).map(([l, s]) => h('option', { value: s, selected: s === 60 }, l)));
  const exportLinks = h('div.export-links');
  const exportBtn = h('button', { onclick: () => {
    const a = new Date(clock?.time ?? timeline.playhead);
    const b = new Date(a.getTime() + Number(exportLen.value) * 1000);
    exportLinks.replaceChildren(...chosen.map((c) =>
      h('a.button', { href: api.exportUrl(c.id, a, b), download: '' }, `Download ${c.name} ${fmtDateTime(a)}`)));
  } }, 'Export from playhead');

  buildPlayers();
  const refresh = window.setInterval(() => timeline.refresh(), 30_000);
  const el = h('div.recordings', null,
    h('div.toolbar', null, picker, jump),
    h('div.toolbar', null, playBtn, speed, clockLabel, zoom),
    timeline.el,
    videos,
    h('div.toolbar', null, h('span', null, 'Export'), exportLen, exportBtn, exportLinks));
  return { el, dispose: () => { clock?.dispose(); window.clearInterval(refresh); } };
}

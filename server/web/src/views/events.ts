// Motion events of the last day across cameras, newest first, each with a
// thumbnail; clicking one plays its camera from a few seconds before.

import { api } from '../api';
import { h, fmtDateTime } from '../dom';
import { go } from '../types';
import type { Ctx, View } from '../types';

const LEAD_MS = 5000;
// A fresh event's GOP is recorded only once it closes (up to a keyframe
// interval later), and the server answers 404 until then.
const THUMB_RETRIES = 5;
const THUMB_RETRY_MS = 2000;
// New events appear without a reload.
const REFRESH_MS = 30_000;

/** An event's thumbnail that asks again, a bounded number of times, while
 * its moment is not recorded yet. */
function thumbnail(url: string): HTMLImageElement {
  const img = h('img', { src: url, alt: '', loading: 'lazy', width: 192, height: 144 });
  let tries = 0;
  img.addEventListener('error', () => {
    if (++tries > THUMB_RETRIES) return;
    window.setTimeout(() => { img.src = `${url}&retry=${tries}`; }, THUMB_RETRY_MS);
  });
  return img;
}

export function eventsView(ctx: Ctx): View {
  const list = h('ol.events', { 'aria-label': 'Motion events' });
  const status = h('p.muted', null, 'Loading…');
  const hours = h('select', { 'aria-label': 'Period', onchange: () => void load() },
    ...([['1 hour', 1], ['6 hours', 6], ['24 hours', 24], ['7 days', 168]] as const).map(([l, v]) => h('option', { value: v, selected: v === 24 }, l)));
  async function load(): Promise<void> {
    const end = new Date();
    const start = new Date(end.getTime() - Number(hours.value) * 3_600_000);
    const all = await Promise.all(ctx.cameras.map(async (c) => {
      const r = await api.events(c.id, start, end).catch(() => null);
      return (r?.items ?? []).map((i) => ({ cam: c, t: Date.parse(i.time), data: i.data as Record<string, unknown> }));
    }));
    const events = all.flat().filter((e) => e.data.event !== 'motion_end').sort((a, b) => b.t - a.t).slice(0, 300);
    status.textContent = events.length ? `${events.length} events` : 'No motion events in this period.';
    list.replaceChildren(...events.map((e) => {
      const kind = String(e.data.event ?? 'motion').replace('_', ' ');
      return h('li', null, h('button.event', { onclick: () => go(`/recordings?cams=${encodeURIComponent(e.cam.id)}&t=${new Date(e.t - LEAD_MS).toISOString()}&span=600000`) },
        thumbnail(api.thumbnailUrl(e.cam.id, new Date(e.t))),
        h('span', null, h('strong', null, e.cam.name), h('br'), fmtDateTime(new Date(e.t)), h('br'), h('small.muted', null, kind))));
    }));
  }
  void load();
  const timer = window.setInterval(() => { if (!document.hidden) void load(); }, REFRESH_MS);
  return { el: h('div', null, h('div.toolbar', null, h('h2', null, 'Events'), hours), status, list), dispose: () => window.clearInterval(timer) };
}

// A zoomable timeline of recordings on a canvas: one row per camera with its
// segments (recorded), gaps (not) and motion events; drag to pan, wheel or
// pinch (or the buttons) to zoom from days to seconds; click to move the
// playhead; hovering shows a preview thumbnail of that moment.

import { api, Recordings, AuxList } from './api';
import { h, fmtTime } from './dom';

export const MIN_SPAN_MS = 10_000;
export const MAX_SPAN_MS = 3 * 86_400_000;
const ROW_H = 28;
const AXIS_H = 22;
const LABEL_W = 88;
const TICKS = [1e3, 5e3, 10e3, 30e3, 60e3, 300e3, 600e3, 1800e3, 3600e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3, 86_400e3];

export interface TimelineCamera { id: string; name: string }
interface RowData { spans: [number, number][]; events: number[] }

export class Timeline {
  readonly el: HTMLDivElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly preview: HTMLDivElement;
  private readonly previewImg: HTMLImageElement;
  private readonly previewTime: HTMLSpanElement;
  private data = new Map<string, RowData>();
  private loaded: [number, number] = [0, 0];
  private loadTimer = 0;
  private drag: { x: number; t0: number; moved: boolean } | null = null;
  private pinch: { d: number; span: number } | null = null;
  private hoverTimer = 0;
  playhead: number;
  onSeek: (t: number, cameraId: string | null) => void = () => {};

  constructor(private cameras: TimelineCamera[], public t0: number, public t1: number) {
    this.playhead = (t0 + t1) / 2;
    this.canvas = h('canvas.timeline-canvas', { 'aria-label': 'Recordings timeline', role: 'img' });
    this.previewImg = h('img', { alt: '' });
    this.previewTime = h('span');
    this.preview = h('div.scrub-preview', { hidden: true }, this.previewImg, this.previewTime);
    this.el = h('div.timeline', null, this.canvas, this.preview);
    this.bind();
    new ResizeObserver(() => this.draw()).observe(this.el);
    this.scheduleLoad();
  }

  setCameras(cameras: TimelineCamera[]): void { this.cameras = cameras; this.loaded = [0, 0]; this.scheduleLoad(); }

  get span(): number { return this.t1 - this.t0; }

  /** Shows `[t0, t1]`, clamped to the allowed zoom. */
  setRange(t0: number, t1: number): void {
    let span = Math.min(MAX_SPAN_MS, Math.max(MIN_SPAN_MS, t1 - t0));
    const mid = (t0 + t1) / 2;
    const now = Date.now();
    let a = mid - span / 2;
    if (a + span > now + span * 0.2) a = now + span * 0.2 - span;
    this.t0 = a; this.t1 = a + span; span = 0;
    this.scheduleLoad();
    this.draw();
  }

  zoom(factor: number, at = this.playhead): void {
    const span = Math.min(MAX_SPAN_MS, Math.max(MIN_SPAN_MS, this.span * factor));
    const f = (at - this.t0) / this.span;
    this.setRange(at - f * span, at - f * span + span);
  }

  setPlayhead(t: number, follow = true): void {
    this.playhead = t;
    if (follow && (t < this.t0 || t > this.t1)) this.setRange(t - this.span / 2, t + this.span / 2);
    else this.draw();
  }

  /** Whether `cameraId` has a recording at `t`. */
  recordedAt(cameraId: string, t: number): boolean {
    return (this.data.get(cameraId)?.spans ?? []).some(([a, b]) => a <= t && t < b);
  }

  /** Gap spans shown for a camera (for tests and the UI). */
  gaps(cameraId: string): [number, number][] {
    const spans = this.data.get(cameraId)?.spans ?? [];
    const out: [number, number][] = [];
    let cursor = this.loaded[0];
    for (const [a, b] of spans) { if (a - cursor > 1000) out.push([cursor, a]); cursor = Math.max(cursor, b); }
    return out;
  }

  private scheduleLoad(): void {
    window.clearTimeout(this.loadTimer);
    this.loadTimer = window.setTimeout(() => void this.load(), 150);
  }

  private async load(): Promise<void> {
    const [la, lb] = this.loaded;
    if (la <= this.t0 && lb >= Math.min(this.t1, Date.now()) && Date.now() - lb < 5000) return;
    const a = this.t0 - this.span / 2;
    const b = Math.min(this.t1 + this.span / 2, Date.now() + 1000);
    const results = await Promise.all(this.cameras.map(async (c) => {
      const [rec, ev] = await Promise.all([
        api.recordings(c.id, new Date(a), new Date(b)).catch(() => null as Recordings | null),
        api.events(c.id, new Date(a), new Date(b)).catch(() => null as AuxList | null),
      ]);
      return [c.id, rec, ev] as const;
    }));
    this.data.clear();
    for (const [id, rec, ev] of results) {
      const spans: [number, number][] = (rec?.segments ?? []).map((s) => [Date.parse(s.start), Date.parse(s.end)]);
      const events = (ev?.items ?? []).filter((i) => (i.data as { event?: string }).event !== 'motion_end').map((i) => Date.parse(i.time));
      this.data.set(id, { spans, events });
    }
    this.loaded = [a, b];
    this.el.dataset.loaded = String(Date.now());
    this.draw();
  }

  /** Refreshes the data (e.g. while playing at the live end). */
  refresh(): void { this.loaded = [0, 0]; this.scheduleLoad(); }

  private x(t: number, w: number): number { return LABEL_W + ((t - this.t0) / this.span) * (w - LABEL_W); }
  private t(x: number, w: number): number { return this.t0 + ((x - LABEL_W) / (w - LABEL_W)) * this.span; }

  draw(): void {
    const dpr = window.devicePixelRatio || 1;
    const w = this.el.clientWidth || 300;
    const hgt = AXIS_H + ROW_H * Math.max(1, this.cameras.length) + 4;
    this.canvas.style.height = `${hgt}px`;
    this.canvas.width = Math.round(w * dpr);
    this.canvas.height = Math.round(hgt * dpr);
    const g = this.canvas.getContext('2d');
    if (!g) return;
    g.scale(dpr, dpr);
    g.clearRect(0, 0, w, hgt);
    g.font = '12px system-ui, sans-serif';
    // Axis ticks.
    const step = TICKS.find((s) => (s / this.span) * (w - LABEL_W) >= 80) ?? TICKS[TICKS.length - 1];
    const tz = new Date().getTimezoneOffset() * 60_000;
    g.fillStyle = '#8a9aa5'; g.strokeStyle = '#2a3640';
    for (let t = Math.ceil((this.t0 - tz) / step) * step + tz; t < this.t1; t += step) {
      const x = this.x(t, w);
      g.beginPath(); g.moveTo(x, AXIS_H - 4); g.lineTo(x, hgt); g.stroke();
      const d = new Date(t);
      const label = step >= 86_400e3 ? d.toLocaleDateString([], { month: 'short', day: 'numeric' })
        : d.getHours() === 0 && d.getMinutes() === 0 && step >= 3600e3 ? d.toLocaleDateString([], { month: 'short', day: 'numeric' })
        : fmtTime(d, step < 60e3);
      g.fillText(label, x + 3, 14);
    }
    // Rows.
    const now = Date.now();
    this.cameras.forEach((c, i) => {
      const y = AXIS_H + i * ROW_H;
      g.fillStyle = '#c8d3da';
      g.fillText(c.name.length > 12 ? `${c.name.slice(0, 11)}…` : c.name, 4, y + 18);
      // Unrecorded (gap) background up to now.
      g.fillStyle = '#3a1f24';
      const gx0 = Math.max(LABEL_W, this.x(this.loaded[0] || this.t0, w));
      const gx1 = Math.min(w, this.x(Math.min(now, this.t1), w));
      if (gx1 > gx0) g.fillRect(gx0, y + 6, gx1 - gx0, ROW_H - 12);
      const row = this.data.get(c.id);
      g.fillStyle = '#2f9e6e';
      for (const [a, b] of row?.spans ?? []) {
        if (b < this.t0 || a > this.t1) continue;
        const x0 = Math.max(LABEL_W, this.x(a, w));
        const x1 = Math.min(w, this.x(b, w));
        g.fillRect(x0, y + 6, Math.max(1, x1 - x0), ROW_H - 12);
      }
      g.fillStyle = '#f2b84b';
      for (const t of row?.events ?? []) {
        if (t < this.t0 || t > this.t1) continue;
        const x = this.x(t, w);
        g.beginPath(); g.moveTo(x, y + 3); g.lineTo(x + 4, y + 9); g.lineTo(x - 4, y + 9); g.fill();
      }
    });
    // Now and playhead.
    if (now >= this.t0 && now <= this.t1) {
      g.fillStyle = '#5b6b76'; g.fillRect(this.x(now, w), AXIS_H - 4, 1, hgt);
    }
    if (this.playhead >= this.t0 && this.playhead <= this.t1) {
      const x = this.x(this.playhead, w);
      g.fillStyle = '#ff5a5a'; g.fillRect(x - 1, 0, 2, hgt);
    }
  }

  private rowAt(y: number): TimelineCamera | null {
    const i = Math.floor((y - AXIS_H) / ROW_H);
    return this.cameras[i] ?? null;
  }

  private showPreview(x: number, y: number): void {
    const w = this.el.clientWidth;
    if (x < LABEL_W) { this.preview.hidden = true; return; }
    const t = this.t(x, w);
    const cam = this.rowAt(y) ?? this.cameras[0];
    if (!cam) return;
    this.previewTime.textContent = `${cam.name} ${fmtTime(new Date(t))}`;
    this.preview.style.left = `${Math.min(Math.max(0, x - 96), w - 192)}px`;
    this.preview.hidden = false;
    window.clearTimeout(this.hoverTimer);
    if (!this.recordedAt(cam.id, t)) { this.previewImg.removeAttribute('src'); this.preview.classList.add('none'); return; }
    this.preview.classList.remove('none');
    // Debounced: one request per pause of the pointer, cached by the server.
    this.hoverTimer = window.setTimeout(() => { this.previewImg.src = api.thumbnailUrl(cam.id, new Date(t)); }, 60);
  }

  private bind(): void {
    const c = this.canvas;
    c.addEventListener('pointerdown', (e) => {
      c.setPointerCapture(e.pointerId);
      this.drag = { x: e.offsetX, t0: this.t0, moved: false };
    });
    c.addEventListener('pointermove', (e) => {
      if (this.drag && e.buttons) {
        const dx = e.offsetX - this.drag.x;
        if (Math.abs(dx) > 3) this.drag.moved = true;
        if (this.drag.moved) {
          const dt = (dx / (this.el.clientWidth - LABEL_W)) * this.span;
          const a = this.drag.t0 - dt;
          this.t0 = a; this.t1 = a + this.span;
          this.scheduleLoad(); this.draw();
        }
      }
      this.showPreview(e.offsetX, e.offsetY);
    });
    c.addEventListener('pointerup', (e) => {
      const d = this.drag;
      this.drag = null;
      if (d && !d.moved && e.offsetX >= LABEL_W) {
        const t = this.t(e.offsetX, this.el.clientWidth);
        this.setPlayhead(t, false);
        this.onSeek(t, this.rowAt(e.offsetY)?.id ?? null);
      }
    });
    c.addEventListener('pointerleave', () => { this.preview.hidden = true; });
    c.addEventListener('wheel', (e) => {
      e.preventDefault();
      const at = this.t(e.offsetX, this.el.clientWidth);
      this.zoom(e.deltaY > 0 ? 1.25 : 0.8, at);
    }, { passive: false });
    c.addEventListener('touchmove', (e) => {
      if (e.touches.length !== 2) return;
      e.preventDefault();
      const d = Math.abs(e.touches[0].clientX - e.touches[1].clientX) + 1;
      if (!this.pinch) { this.pinch = { d, span: this.span }; return; }
      const span = this.pinch.span * (this.pinch.d / d);
      this.zoom(span / this.span);
    }, { passive: false });
    c.addEventListener('touchend', () => { this.pinch = null; });
  }
}

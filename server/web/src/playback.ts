// Recorded playback: one <video> per camera plays the segment files the
// index lists (each segment's media time 0 is its first frame), moving to
// the next segment at its end. A SyncClock keeps several cameras on one
// wall-clock time: it advances while no player is buffering, and any player
// more than MAX_SKEW_MS off is re-seeked.

import { api, Segment } from './api';

const MAX_SKEW_MS = 400;
const WINDOW_MS = 3_600_000;

export class SegmentPlayer {
  private segments: Segment[] = [];
  private window: [number, number] = [0, 0];
  private current: Segment | null = null;
  private loading: Promise<void> | null = null;
  /** True when there is no recording at the clock's time. */
  idle = true;

  constructor(readonly cameraId: string, readonly video: HTMLVideoElement, private readonly onState: (s: string) => void = () => {}) {
    video.muted = true;
    video.playsInline = true;
    video.preload = 'auto';
  }

  /** The wall time shown now, or null. */
  get wallTime(): number | null {
    if (!this.current || this.idle) return null;
    return Date.parse(this.current.start) + this.video.currentTime * 1000;
  }

  get buffering(): boolean { return !this.idle && (this.video.readyState < 3 || this.video.seeking); }

  private async segmentsAround(t: number): Promise<Segment[]> {
    if (t < this.window[0] || t > this.window[1] - 60_000 || this.segments.some((s) => s.recording)) {
      const a = t - WINDOW_MS / 4, b = t + WINDOW_MS;
      const r = await api.recordings(this.cameraId, new Date(a), new Date(Math.min(b, Date.now() + 1000)));
      this.segments = r.segments;
      this.window = [a, b];
    }
    return this.segments;
  }

  /** Shows wall time `t` (loads the segment if needed). */
  async seek(t: number, play: boolean): Promise<void> {
    if (this.loading) await this.loading;
    this.loading = this.doSeek(t, play);
    try { await this.loading; } finally { this.loading = null; }
  }

  private async doSeek(t: number, play: boolean): Promise<void> {
    const segs = await this.segmentsAround(t);
    const seg = segs.find((s) => Date.parse(s.start) <= t && t < Date.parse(s.end))
      ?? segs.find((s) => Date.parse(s.start) > t && Date.parse(s.start) - t < 2000);
    if (!seg) {
      this.idle = true;
      this.video.pause();
      this.onState('no recording');
      return;
    }
    this.idle = false;
    const offset = Math.max(0, (t - Date.parse(seg.start)) / 1000);
    if (!this.current || this.current.id !== seg.id || this.current.bytes !== seg.bytes) {
      this.current = seg;
      this.video.src = seg.url;
      await new Promise<void>((res) => {
        const done = () => { this.video.removeEventListener('loadedmetadata', done); this.video.removeEventListener('error', done); res(); };
        this.video.addEventListener('loadedmetadata', done);
        this.video.addEventListener('error', done);
      });
    }
    this.video.currentTime = offset;
    this.onState('playing');
    if (play) await this.video.play().catch(() => undefined);
    else this.video.pause();
  }

  /** Called at a segment's end: continues with the next recording. */
  async next(play: boolean): Promise<void> {
    if (!this.current) return;
    const end = Date.parse(this.current.end);
    this.current = null;
    this.segments = [];
    this.window = [0, 0];
    await this.seek(end + 1, play);
  }
}

export class SyncClock {
  private anchorWall: number;
  private anchorPerf = performance.now();
  private timer = 0;
  playing = false;
  private rate = 1;
  onTick: (t: number) => void = () => {};

  constructor(readonly players: SegmentPlayer[], start: number) {
    this.anchorWall = start;
    for (const p of players) {
      p.video.addEventListener('ended', () => void p.next(this.playing));
      // A new source resets the element's rate.
      p.video.addEventListener('loadedmetadata', () => { p.video.playbackRate = this.rate; });
    }
  }

  get time(): number {
    return this.playing ? this.anchorWall + (performance.now() - this.anchorPerf) * this.rate : this.anchorWall;
  }

  async seek(t: number): Promise<void> {
    this.anchorWall = t;
    this.anchorPerf = performance.now();
    await Promise.all(this.players.map((p) => p.seek(t, this.playing)));
    this.anchorPerf = performance.now();
    this.onTick(t);
  }

  /** Playback speed for every camera (1 = real time). */
  setRate(rate: number): void {
    this.anchorWall = this.time;
    this.anchorPerf = performance.now();
    this.rate = rate;
    for (const p of this.players) p.video.playbackRate = rate;
  }

  play(): void {
    if (this.playing) return;
    this.anchorWall = this.time;
    this.anchorPerf = performance.now();
    this.playing = true;
    for (const p of this.players) if (!p.idle) void p.video.play().catch(() => undefined);
    this.timer = window.setInterval(() => this.tick(), 250);
  }

  pause(): void {
    this.anchorWall = this.time;
    this.playing = false;
    window.clearInterval(this.timer);
    for (const p of this.players) p.video.pause();
  }

  private idleTry = new Map<SegmentPlayer, number>();

  private tick(): void {
    // Hold the clock while a camera buffers, so they stay together.
    if (this.players.some((p) => p.buffering)) {
      this.anchorWall = this.time;
      this.anchorPerf = performance.now();
    }
    const t = this.time;
    for (const p of this.players) {
      const w = p.wallTime;
      if (p.idle) {
        // Look again every 2 s whether the clock has reached a recording.
        if (performance.now() - (this.idleTry.get(p) ?? 0) > 2000) { this.idleTry.set(p, performance.now()); void p.seek(t, true); }
        continue;
      }
      if (w !== null && Math.abs(w - t) > MAX_SKEW_MS * this.rate && !p.video.seeking) void p.seek(t, true);
    }
    this.onTick(t);
  }

  dispose(): void {
    window.clearInterval(this.timer);
    for (const p of this.players) { p.video.pause(); p.video.removeAttribute('src'); p.video.load(); }
  }
}

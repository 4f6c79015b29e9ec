// Live video: WebSocket → fragmented MP4 → Media Source Extensions
// (ManagedMediaSource where MediaSource is missing, as on iOS Safari).
//
// The server sends a JSON "init" (codec, base_capture_us, audio) and the init
// segment, then one fragment per frame whose media time is its capture time
// minus base_capture_us; for a camera with a microphone, audio-only
// fragments on the same clock between them (the page starts muted). The player keeps its buffer short: whenever it is
// more than MAX_LAG_S behind the newest frame it jumps to the live edge, and
// it trims what it has played. Latency = presentation time (from
// requestVideoFrameCallback) - capture time.

const MAX_LAG_S = 0.5;
const EDGE_S = 0.04;
// With sound the playhead stays further from the edge: the audio renderer
// needs data ahead of it, and audio and video arrive in different rhythms
// (20 ms packets, 33 ms frames), so a tight edge would stall on underruns.
const EDGE_AUDIO_S = 0.2;
const KEEP_S = 8;
const MAX_QUEUE = 90;

type MSCtor = typeof MediaSource;
const MediaSourceImpl: MSCtor | undefined =
  (window as unknown as { MediaSource?: MSCtor; ManagedMediaSource?: MSCtor }).MediaSource ??
  (window as unknown as { ManagedMediaSource?: MSCtor }).ManagedMediaSource;

export function liveSupported(): boolean { return MediaSourceImpl !== undefined; }

export interface LiveStats {
  /** Frames presented (requestVideoFrameCallback). */
  framesShown: number;
  /** ms since navigation start when the first frame was presented. */
  firstFrameAt: number | null;
  /** ms from start() to the first frame. */
  firstFrameMs: number | null;
  /** Recent capture-to-display latencies, ms. */
  latencies: number[];
  /** Server "drop" messages (client fell behind). */
  drops: number;
  /** Jumps to the live edge made by the page. */
  jumps: number;
  reconnects: number;
  bytes: number;
}

interface InitMsg { type: 'init'; codec: string; audio?: boolean; width: number; height: number; name: string; base_capture_us: number }
type ServerMsg = InitMsg | { type: 'drop'; frames: number } | { type: 'offline' } | { type: 'online' };

declare global {
  interface Window { __kodama?: { players: Set<LivePlayer> } }
}

export class LivePlayer {
  readonly stats: LiveStats = { framesShown: 0, firstFrameAt: null, firstFrameMs: null, latencies: [], drops: 0, jumps: 0, reconnects: 0, bytes: 0 };
  private ws: WebSocket | null = null;
  private ms: MediaSource | null = null;
  private sb: SourceBuffer | null = null;
  private queue: ArrayBuffer[] = [];
  private codec = '';
  private baseCaptureUs = 0;
  private running = false;
  private retryMs = 500;
  private retryTimer = 0;
  private edgeTimer = 0;
  private startedAt = 0;
  private objectUrl = '';
  private lastLatency = 0;

  /** Whether the camera's stream has sound (from its init). */
  audio = false;

  constructor(readonly cameraId: string, readonly video: HTMLVideoElement, private readonly onState: (state: string) => void = () => {},
    private readonly onAudio: (audio: boolean) => void = () => {}) {
    video.muted = true;
    video.playsInline = true;
    video.autoplay = true;
    (video as HTMLVideoElement & { disableRemotePlayback: boolean }).disableRemotePlayback = true;
    (window.__kodama ??= { players: new Set() }).players.add(this);
  }

  /** Latest capture-to-display latency, ms. */
  get latencyMs(): number { return this.lastLatency; }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.startedAt = performance.now();
    this.connect();
    this.edgeTimer = window.setInterval(() => this.keepLive(), 250);
    this.watchFrames();
  }

  stop(): void {
    this.running = false;
    window.clearTimeout(this.retryTimer);
    window.clearInterval(this.edgeTimer);
    this.teardown();
    this.onState('paused');
  }

  destroy(): void {
    this.stop();
    window.__kodama?.players.delete(this);
  }

  private teardown(): void {
    if (this.ws) { this.ws.onclose = null; this.ws.close(); this.ws = null; }
    this.sb = null;
    this.queue = [];
    this.codec = '';
    if (this.ms && this.ms.readyState === 'open') { try { this.ms.endOfStream(); } catch { /* closing anyway */ } }
    this.ms = null;
    this.video.removeAttribute('src');
    this.video.load();
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = '';
  }

  private connect(): void {
    if (!MediaSourceImpl) { this.onState('unsupported'); return; }
    this.onState('connecting');
    const ws = new WebSocket(this.liveUrl());
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') this.onText(JSON.parse(ev.data) as ServerMsg);
      else { this.stats.bytes += (ev.data as ArrayBuffer).byteLength; this.enqueue(ev.data as ArrayBuffer); }
    };
    ws.onopen = () => { this.retryMs = 500; };
    ws.onclose = () => {
      if (!this.running) return;
      this.teardown();
      this.stats.reconnects++;
      this.onState('reconnecting');
      this.retryTimer = window.setTimeout(() => { if (this.running) this.connect(); }, this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 5000);
    };
  }

  private liveUrl(): string {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    return `${proto}://${location.host}/api/v1/cameras/${encodeURIComponent(this.cameraId)}/live`;
  }

  private onText(m: ServerMsg): void {
    switch (m.type) {
      case 'init':
        this.baseCaptureUs = m.base_capture_us;
        if (this.audio !== (m.audio === true)) { this.audio = m.audio === true; this.onAudio(this.audio); }
        if (this.codec !== m.codec) this.openSource(m.codec);
        this.onState('live');
        break;
      case 'drop':
        this.stats.drops++;
        break;
      case 'offline':
        this.onState('offline');
        break;
      case 'online':
        this.onState('live');
        break;
    }
  }

  private openSource(codec: string): void {
    const Impl = MediaSourceImpl!;
    const type = `video/mp4; codecs="${codec}"`;
    if (!Impl.isTypeSupported(type)) { this.onState('unsupported'); return; }
    if (this.sb && this.ms?.readyState === 'open' && 'changeType' in this.sb) {
      this.sb.changeType(type);
      this.codec = codec;
      return;
    }
    this.codec = codec;
    const ms = new Impl();
    this.ms = ms;
    this.sb = null;
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = URL.createObjectURL(ms);
    this.video.src = this.objectUrl;
    ms.addEventListener('sourceopen', () => {
      if (this.ms !== ms) return;
      const sb = ms.addSourceBuffer(type);
      sb.mode = 'segments';
      sb.addEventListener('updateend', () => { this.pump(); this.keepLive(); });
      this.sb = sb;
      this.pump();
    }, { once: true });
  }

  private enqueue(buf: ArrayBuffer): void {
    this.queue.push(buf);
    if (this.queue.length > MAX_QUEUE) {
      // The decoder cannot keep up: start over at the next init (the server
      // begins every connection with one), rather than drift behind.
      this.ws?.close();
      return;
    }
    this.pump();
  }

  private pump(): void {
    const sb = this.sb;
    if (!sb || sb.updating || this.queue.length === 0) return;
    const next = this.queue.shift()!;
    try {
      sb.appendBuffer(next);
    } catch (e) {
      if ((e as DOMException).name === 'QuotaExceededError') { this.trim(true); this.queue.unshift(next); }
      else this.ws?.close();
    }
  }

  private trim(force = false): void {
    const sb = this.sb;
    const v = this.video;
    if (!sb || sb.updating || sb.buffered.length === 0) return;
    const start = sb.buffered.start(0);
    const keepFrom = v.currentTime - (force ? 1 : KEEP_S);
    if (keepFrom - start > (force ? 0 : 2)) { try { sb.remove(start, keepFrom); } catch { /* retried next tick */ } }
  }

  /** Stay at the live edge: jump when behind, never play stale frames. */
  private keepLive(): void {
    const v = this.video;
    const b = v.buffered;
    if (!this.running || b.length === 0) return;
    const end = b.end(b.length - 1);
    const lag = end - v.currentTime;
    if (lag > MAX_LAG_S || v.currentTime < b.start(b.length - 1)) {
      v.currentTime = Math.max(b.start(b.length - 1), end - (this.audio ? EDGE_AUDIO_S : EDGE_S));
      this.stats.jumps++;
    }
    if (v.paused) v.play().catch(() => { /* autoplay of muted video is allowed; retried */ });
    this.trim();
  }

  private watchFrames(): void {
    const v = this.video as HTMLVideoElement & { requestVideoFrameCallback?: (cb: (now: number, meta: { mediaTime: number; expectedDisplayTime: number; presentedFrames: number }) => void) => number };
    if (!v.requestVideoFrameCallback) {
      // No per-frame callback (old Safari): count on timeupdate instead.
      v.addEventListener('timeupdate', () => { if (this.running) this.frameShown(performance.now(), v.currentTime); });
      return;
    }
    const onFrame = (_now: number, meta: { mediaTime: number; expectedDisplayTime: number }) => {
      if (this.running) {
        this.frameShown(meta.expectedDisplayTime, meta.mediaTime);
        v.requestVideoFrameCallback!(onFrame);
      }
    };
    v.requestVideoFrameCallback(onFrame);
  }

  private frameShown(displayPerfMs: number, mediaTime: number): void {
    this.stats.framesShown++;
    if (this.stats.firstFrameAt === null) {
      this.stats.firstFrameAt = performance.now();
      this.stats.firstFrameMs = performance.now() - this.startedAt;
    }
    const captureMs = this.baseCaptureUs / 1000 + mediaTime * 1000;
    const displayMs = performance.timeOrigin + displayPerfMs;
    this.lastLatency = displayMs - captureMs;
    this.stats.latencies.push(this.lastLatency);
    if (this.stats.latencies.length > 4000) this.stats.latencies.splice(0, 2000);
  }
}

/** Starts players that are on screen in a visible tab, pauses the rest. */
export class VisibilityPauser {
  private readonly visible = new Set<LivePlayer>();
  private readonly observer: IntersectionObserver;
  private readonly byElement = new Map<Element, LivePlayer>();
  private readonly onVis = () => this.apply();

  constructor() {
    this.observer = new IntersectionObserver((entries) => {
      for (const e of entries) {
        const p = this.byElement.get(e.target);
        if (!p) continue;
        if (e.isIntersecting) this.visible.add(p); else this.visible.delete(p);
      }
      this.apply();
    });
    document.addEventListener('visibilitychange', this.onVis);
  }

  watch(p: LivePlayer): void {
    this.byElement.set(p.video, p);
    this.observer.observe(p.video);
  }

  private apply(): void {
    for (const p of this.byElement.values()) {
      if (!document.hidden && this.visible.has(p)) p.start(); else p.stop();
    }
  }

  dispose(): void {
    this.observer.disconnect();
    document.removeEventListener('visibilitychange', this.onVis);
    for (const p of this.byElement.values()) p.destroy();
    this.byElement.clear();
  }
}

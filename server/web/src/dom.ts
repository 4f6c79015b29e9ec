// A tiny element builder: h('div.card', {onclick}, 'text', child).

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, unknown>;

export function h<K extends keyof HTMLElementTagNameMap>(
  spec: K | `${K}.${string}` | `${K}#${string}`,
  attrs?: Attrs | null,
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const [tagAndId, ...classes] = spec.split('.');
  const [tag, id] = tagAndId.split('#');
  const el = document.createElement(tag as K);
  if (id) el.id = id;
  if (classes.length) el.className = classes.join(' ');
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v as EventListener);
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v as Record<string, string>);
    } else if (k in el && typeof v !== 'string') {
      (el as unknown as Record<string, unknown>)[k] = v;
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el: Node, children: (Child | Child[])[]): void {
  for (const c of children) {
    if (Array.isArray(c)) append(el, c);
    else if (c === null || c === undefined || c === false) continue;
    else el.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }
}

export function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

export function fmtTime(d: Date, withSeconds = true): string {
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: withSeconds ? '2-digit' : undefined, hour12: false });
}

export function fmtDateTime(d: Date): string {
  return `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${fmtTime(d)}`;
}

export function fmtBytes(n: number): string {
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

export function ago(d: Date): string {
  const s = Math.max(0, (Date.now() - d.getTime()) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

/** Whether a playing <video> has sound, where the browser can tell. */
export function hasAudio(v: HTMLVideoElement): boolean {
  const x = v as HTMLVideoElement & { audioTracks?: { length: number }; mozHasAudio?: boolean; webkitAudioDecodedByteCount?: number };
  return (x.audioTracks?.length ?? 0) > 0 || x.mozHasAudio === true || (x.webkitAudioDecodedByteCount ?? 0) > 0;
}

/** A sound toggle for `v`; videos start muted (autoplay allows only that). */
export function soundButton(v: HTMLVideoElement): HTMLButtonElement {
  const b = h('button.sound', { type: 'button', hidden: true });
  const show = () => {
    b.textContent = v.muted ? 'Sound off' : 'Sound on';
    b.setAttribute('aria-pressed', String(!v.muted));
    b.setAttribute('aria-label', v.muted ? 'Unmute' : 'Mute');
  };
  b.addEventListener('click', (e) => {
    // Inside a tile that is a link: toggle, don't navigate.
    e.preventDefault();
    e.stopPropagation();
    v.muted = !v.muted;
    if (!v.muted && v.paused) v.play().catch(() => { /* the click allows it */ });
    show();
  });
  v.addEventListener('volumechange', show);
  show();
  return b;
}

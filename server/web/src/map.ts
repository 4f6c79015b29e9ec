// The GPS track on a map that works offline: a Web Mercator coordinate grid
// with labelled lines, the track and the latest position. With a tile URL
// configured by the owner (api.map_tile_url), tiles are laid underneath.

interface Pt { lat: number; lon: number }

const TILE = 256;
function mercX(lon: number, z: number): number { return ((lon + 180) / 360) * TILE * 2 ** z; }
function mercY(lat: number, z: number): number {
  const s = Math.sin((Math.max(-85, Math.min(85, lat)) * Math.PI) / 180);
  return (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * TILE * 2 ** z;
}

export function drawTrack(box: HTMLElement, canvas: HTMLCanvasElement, track: Pt[], tileUrl: string | null): void {
  const w = box.clientWidth || 320;
  const hgt = Math.round(Math.min(320, w * 0.7));
  const dpr = window.devicePixelRatio || 1;
  canvas.width = w * dpr; canvas.height = hgt * dpr;
  canvas.style.width = `${w}px`; canvas.style.height = `${hgt}px`;
  box.style.height = `${hgt}px`;
  const g = canvas.getContext('2d');
  if (!g) return;
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, hgt);
  box.querySelectorAll('img.tile-img').forEach((i) => i.remove());
  if (track.length === 0) {
    g.fillStyle = '#8a9aa5'; g.font = '13px system-ui, sans-serif';
    g.fillText('No GPS fix recorded.', 12, 24);
    return;
  }
  const lats = track.map((p) => p.lat), lons = track.map((p) => p.lon);
  const [minLat, maxLat, minLon, maxLon] = [Math.min(...lats), Math.max(...lats), Math.min(...lons), Math.max(...lons)];
  // The largest zoom at which the track fits with a margin.
  let z = 18;
  while (z > 1 && (mercX(maxLon, z) - mercX(minLon, z) > w * 0.7 || mercY(minLat, z) - mercY(maxLat, z) > hgt * 0.7)) z--;
  const cx = (mercX(minLon, z) + mercX(maxLon, z)) / 2, cy = (mercY(minLat, z) + mercY(maxLat, z)) / 2;
  const px = (p: Pt): [number, number] => [mercX(p.lon, z) - cx + w / 2, mercY(p.lat, z) - cy + hgt / 2];
  if (tileUrl) {
    const x0 = Math.floor((cx - w / 2) / TILE), x1 = Math.floor((cx + w / 2) / TILE);
    const y0 = Math.floor((cy - hgt / 2) / TILE), y1 = Math.floor((cy + hgt / 2) / TILE);
    for (let x = x0; x <= x1; x++) for (let y = y0; y <= y1; y++) {
      const img = document.createElement('img');
      img.className = 'tile-img'; img.alt = ''; img.referrerPolicy = 'no-referrer';
      img.src = tileUrl.replace('{z}', String(z)).replace('{x}', String(x)).replace('{y}', String(y));
      img.style.left = `${x * TILE - cx + w / 2}px`; img.style.top = `${y * TILE - cy + hgt / 2}px`;
      box.insertBefore(img, canvas);
    }
  } else {
    // Grid lines every "nice" step of degrees, labelled.
    const spanDeg = (w / (TILE * 2 ** z)) * 360;
    const steps = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 45];
    const step = steps.find((s) => spanDeg / s <= 6) ?? 45;
    const digits = Math.max(0, -Math.floor(Math.log10(step)));
    g.strokeStyle = '#24313a'; g.fillStyle = '#6f808b'; g.font = '11px system-ui, sans-serif'; g.lineWidth = 1;
    const centerLon = (minLon + maxLon) / 2, centerLat = (minLat + maxLat) / 2;
    for (let lon = Math.floor((centerLon - spanDeg) / step) * step; lon < centerLon + spanDeg; lon += step) {
      const [x] = px({ lat: centerLat, lon });
      g.beginPath(); g.moveTo(x, 0); g.lineTo(x, hgt); g.stroke(); g.fillText(`${lon.toFixed(digits)}°`, x + 2, hgt - 4);
    }
    for (let lat = Math.floor((centerLat - spanDeg) / step) * step; lat < centerLat + spanDeg; lat += step) {
      const [, y] = px({ lat, lon: centerLon });
      g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke(); g.fillText(`${lat.toFixed(digits)}°`, 2, y - 2);
    }
  }
  g.strokeStyle = '#4fc3f7'; g.lineWidth = 2; g.beginPath();
  track.forEach((p, i) => { const [x, y] = px(p); if (i) g.lineTo(x, y); else g.moveTo(x, y); });
  g.stroke();
  const [lx, ly] = px(track[track.length - 1]);
  g.fillStyle = '#ff5a5a'; g.beginPath(); g.arc(lx, ly, 5, 0, Math.PI * 2); g.fill();
  const last = track[track.length - 1];
  g.fillStyle = '#c8d3da'; g.font = '12px system-ui, sans-serif';
  g.fillText(`${last.lat.toFixed(5)}, ${last.lon.toFixed(5)}`, 8, 16);
}

// Kodama's web app: routes (location hash), login and first-run setup, and
// the views. Everything it loads comes from the server that serves it.

import { api, ApiError, setCsrf, setUnauthorizedHandler, SessionInfo, Camera } from './api';
import { h, clear } from './dom';
import { liveGridView, cameraView } from './views/live';
import { recordingsView } from './views/recordings';
import { eventsView } from './views/events';
import { accountsView } from './views/accounts';
import type { Ctx, View } from './types';


const root = document.getElementById('app')!;
let session: SessionInfo | null = null;
let current: View | null = null;

function route(): { path: string; params: URLSearchParams } {
  const hash = location.hash.replace(/^#/, '');
  const [path, query] = hash.split('?');
  return { path: path || '/', params: new URLSearchParams(query ?? '') };
}


function header(s: SessionInfo): HTMLElement {
  const { path } = route();
  const link = (href: string, label: string) =>
    h('a', { href: `#${href}`, class: path === href || (href !== '/' && path.startsWith(href)) ? 'active' : undefined }, label);
  return h('header.top', null,
    h('a.brand', { href: '#/' }, h('img', { src: '/icon.svg', alt: '', width: 22, height: 22 }), 'Kodama'),
    h('nav', null,
      link('/', 'Live'),
      link('/recordings', 'Recordings'),
      link('/events', 'Events'),
      s.account.role === 'admin' ? link('/accounts', 'Accounts') : null),
    h('details.menu', null,
      h('summary', null, s.account.name),
      h('div.menu-body', null,
        h('p.muted', null, `Signed in as ${s.account.name} (${s.account.role})`),
        h('button', { onclick: async () => { await api.logout().catch(() => undefined); location.hash = ''; location.reload(); } }, 'Log out'),
        h('button', { onclick: async () => {
          if (!confirm('Log out on every device?')) return;
          await api.logoutAll().catch(() => undefined); location.hash = ''; location.reload();
        } }, 'Log out everywhere'))));
}

async function render(): Promise<void> {
  current?.dispose?.();
  current = null;
  if (!session) return;
  const { path, params } = route();
  let cameras: Camera[] = [];
  try { cameras = (await api.cameras()).cameras; } catch (e) { if ((e as ApiError).status === 401) return; }
  cameras.sort((a, b) => a.name.localeCompare(b.name));
  const ctx: Ctx = { session, cameras, params };
  let view: View;
  if (path.startsWith('/camera/')) view = cameraView(ctx, decodeURIComponent(path.slice('/camera/'.length)));
  else if (path === '/recordings') view = recordingsView(ctx);
  else if (path === '/events') view = eventsView(ctx);
  else if (path === '/accounts' && session.account.role === 'admin') view = accountsView(ctx);
  else view = liveGridView(ctx);
  clear(root);
  root.append(header(session), h('main', null, view.el));
  current = view;
}

function authForm(title: string, intro: string, button: string, submit: (name: string, password: string) => Promise<SessionInfo>): HTMLElement {
  const name = h('input', { name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: false });
  const password = h('input', { name: 'password', type: 'password', autocomplete: button === 'Log in' ? 'current-password' : 'new-password', required: true, minLength: button === 'Log in' ? undefined : 8 });
  const error = h('p.error', { role: 'alert' });
  const btn = h('button.primary', { type: 'submit' }, button);
  const form = h('form.auth', { onsubmit: async (e: Event) => {
    e.preventDefault();
    error.textContent = '';
    btn.disabled = true;
    try {
      session = await submit(name.value.trim(), password.value);
      setCsrf(session.csrf);
      history.replaceState(null, '', location.pathname + '#/');
      await render();
    } catch (err) {
      error.textContent = err instanceof ApiError ? err.message : 'The server cannot be reached.';
    } finally { btn.disabled = false; }
  } },
  h('img', { src: '/icon.svg', alt: '', width: 48, height: 48 }),
  h('h1', null, title), h('p.muted', null, intro),
  h('label', null, 'Name', name), h('label', null, 'Password', password), error, btn);
  return form;
}

async function boot(): Promise<void> {
  setUnauthorizedHandler(() => { session = null; void boot(); });
  const setupToken = new URLSearchParams(location.hash.replace(/^#/, '')).get('setup');
  clear(root);
  try {
    session = await api.session();
    setCsrf(session.csrf);
  } catch (e) {
    session = null;
    const pending = e instanceof ApiError && e.status === 401;
    if (!pending) { root.append(h('p.error', null, 'The server cannot be reached. Retrying…')); setTimeout(() => void boot(), 3000); return; }
    if (setupToken) {
      root.append(authForm('Welcome to Kodama', 'Create the admin account for this server. This link works once.', 'Create account',
        (n, p) => api.setup(setupToken, n, p)));
    } else {
      root.append(authForm('Kodama', 'Log in to watch your cameras.', 'Log in', (n, p) => api.login(n, p)));
    }
    return;
  }
  await render();
}

window.addEventListener('hashchange', () => { if (session) void render(); });
void boot();

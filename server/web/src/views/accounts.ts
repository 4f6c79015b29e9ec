// Accounts (admins only): who can log in, with which role.

import { api, Role } from '../api';
import { h } from '../dom';
import type { Ctx, View } from '../types';

export function accountsView(ctx: Ctx): View {
  const list = h('ul.accounts');
  const error = h('p.error', { role: 'alert' });
  async function load(): Promise<void> {
    const { accounts } = await api.accounts();
    list.replaceChildren(...accounts.map((a) => h('li', null, h('strong', null, a.name), ` ${a.role}`,
      a.id === ctx.session.account.id ? h('span.muted', null, ' (you)') : h('button.danger', { onclick: async () => {
        if (!confirm(`Delete ${a.name}?`)) return;
        try { await api.deleteAccount(a.id); await load(); } catch (e) { error.textContent = (e as Error).message; }
      } }, 'Delete'))));
  }
  const name = h('input', { required: true, autocomplete: 'off', 'aria-label': 'Name' });
  const password = h('input', { type: 'password', required: true, minLength: 8, autocomplete: 'new-password', 'aria-label': 'Password' });
  const role = h('select', { 'aria-label': 'Role' }, h('option', { value: 'viewer' }, 'viewer (watch only)'), h('option', { value: 'admin' }, 'admin'));
  const form = h('form.inline', { onsubmit: async (e: Event) => {
    e.preventDefault();
    error.textContent = '';
    try { await api.createAccount(name.value.trim(), role.value as Role, password.value); form.reset(); await load(); } catch (err) { error.textContent = (err as Error).message; }
  } }, name, password, role, h('button.primary', { type: 'submit' }, 'Add account'));
  void load();
  return { el: h('div', null, h('h2', null, 'Accounts'), list, h('h3', null, 'New account'), form, error) };
}

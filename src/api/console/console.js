// slct console: views of the cluster, states and channels, with their actions.
//
// Every id and value shown comes from users, so the page is built with DOM calls and
// textContent only (see el() below); never with innerHTML. The API token, if the node
// needs one, is kept in sessionStorage (gone when the tab closes) and sent as
// "Authorization: Bearer".
'use strict';

// Errors of the page itself, for people and for the browser test (tests/console.rs).
window.slctErrors = [];
window.addEventListener('error', (e) => window.slctErrors.push('error: ' + e.message));
window.addEventListener('unhandledrejection', (e) =>
  window.slctErrors.push('unhandled rejection: ' + String(e.reason)));
window.addEventListener('securitypolicyviolation', (e) =>
  window.slctErrors.push('blocked by CSP: ' + e.violatedDirective));
{
  const original = console.error.bind(console);
  console.error = (...args) => {
    window.slctErrors.push('console.error: ' + args.map(String).join(' '));
    original(...args);
  };
}

const TOKEN_KEY = 'slct.token';
const PAGE = 50;
const HISTORY_PAGE = 20;
const STATUSES = ['waiting', 'pending', 'leased', 'done', 'failed', 'paused'];

/** An answer of the API that is not 2xx. */
class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * Calls the API on this node; JSON in and out (text when opts.text). Every write says
 * `Content-Type: application/json`, with a body or without, as the node asks of writes.
 */
async function api(method, path, body, opts = {}) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined || method !== 'GET') headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) {
    let err = {};
    try { err = JSON.parse(text).error || {}; } catch (_) { /* not JSON */ }
    if (res.status === 401) showLogin(true);
    throw new ApiFailure(res.status, err.code || 'http_' + res.status, err.message || text);
  }
  if (opts.text) return text;
  return text ? JSON.parse(text) : null;
}

/**
 * Builds an element: el('td', {class: 'num'}, 'text', child, ...). Strings become text
 * nodes; attributes are set with setAttribute; `on*` functions become listeners.
 */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else {
      node.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const view = () => document.getElementById('view');

/** Replaces the view's content. */
function show(children) {
  view().replaceChildren();
  append(view(), children);
}

/** A message above the view: an error (red) or, with info, a note. */
function notice(message, info) {
  const box = document.getElementById('notice');
  box.hidden = !message;
  box.className = info ? 'info' : '';
  box.textContent = message || '';
}

function failure(e) {
  if (e instanceof ApiFailure && e.status === 401) {
    showLogin(true);
  } else if (e instanceof ApiFailure) {
    notice(`${e.status} ${e.code}: ${e.message}`);
  } else {
    notice('The node could not be reached: ' + e.message);
  }
}

/**
 * The token box appears only once the node has asked for a token (a 401); signed in,
 * only the sign-out button shows.
 */
function showLogin(needed) {
  const form = document.getElementById('login');
  const signedIn = Boolean(sessionStorage.getItem(TOKEN_KEY));
  form.hidden = !needed && !signedIn;
  document.getElementById('token').hidden = !needed;
  form.querySelector('button[type=submit]').hidden = !needed;
  document.getElementById('logout').hidden = !signedIn;
  if (needed) notice('This node requires a token: enter the API token (--token) above.');
}

/** Unix ms as UTC, the CLI's format (`YYYY-MM-DD hh:mm:ss.mmm`), with how long ago or ahead. */
function time(ms) {
  if (!ms) return '';
  const utc = new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
  return `${utc} UTC (${relative(ms)})`;
}

/** `in 5 s`, `3 min ago`, `now`: how far `ms` is from the browser's clock. */
function relative(ms) {
  const delta = ms - Date.now();
  let n = Math.abs(delta) / 1000;
  if (n < 1) return 'now';
  let unit = 's';
  for (const [next, size] of [['min', 60], ['h', 60], ['d', 24]]) {
    if (n < size) break;
    n /= size;
    unit = next;
  }
  const text = `${Math.floor(n)} ${unit}`;
  return delta > 0 ? 'in ' + text : text + ' ago';
}

/** Orders ids as people do: `job-2` before `job-10` (runs of digits compare as numbers). */
function naturally(a, b) {
  const parts = (text) => text.match(/\d+|\D+/g) || [];
  const x = parts(a);
  const y = parts(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] === y[i]) continue;
    const digits = /^\d/.test(x[i]) && /^\d/.test(y[i]);
    if (digits) {
      const p = x[i].replace(/^0+/, '');
      const q = y[i].replace(/^0+/, '');
      if (p.length !== q.length) return p.length - q.length;
      if (p !== q) return p < q ? -1 : 1;
    }
    return x[i] < y[i] ? -1 : 1;
  }
  return x.length - y.length;
}

/** What a state's selects wait on: its channels and its next timer. */
function waitsOn(s) {
  const chans = [];
  let timer = null;
  for (const select of s.selects || []) {
    for (const c of select.cases) {
      if ((c.op === 'recv' || c.op === 'send') && !chans.includes(`${c.op} ${c.chan}`)) {
        chans.push(`${c.op} ${c.chan}`);
      }
      if (c.op === 'timer' && c.at && (timer === null || c.at < timer)) timer = c.at;
    }
  }
  const parts = [...chans];
  if (timer !== null) parts.push('timer ' + relative(timer));
  return parts.join(' · ');
}

/** The lease as one line: who holds it (by token) and until when. */
function leaseText(s) {
  if (!s.lease) return '';
  const holder = s.callback ? 'callback' : 'worker';
  return `${holder} ${s.lease.token.slice(0, 8)}…, expires ${relative(s.lease.expires_at)}`;
}

function json(value) {
  return el('pre', {}, JSON.stringify(value, null, 2));
}

function badge(status) {
  return el('span', { class: 'badge s-' + status }, status);
}

/** A <dl> of label → value pairs (values may be nodes). */
function facts(pairs) {
  return el('dl', { class: 'facts' },
    pairs.filter(([, v]) => v !== undefined).map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

function table(headers, rows, empty) {
  if (!rows.length) return el('p', { class: 'muted' }, empty);
  return el('table', {},
    el('thead', {}, el('tr', {}, headers.map((h) =>
      el('th', { class: h.endsWith('#') ? 'num' : null }, h.replace(/#$/, ''))))),
    el('tbody', {}, rows));
}

function num(value) {
  return el('td', { class: 'num' }, value === null || value === undefined ? '–' : value);
}

// ---- Routing: #/view?query ------------------------------------------------------------

/** The current route: view name, path rest and query. */
function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, query] = hash.split('?');
  const [name, ...rest] = path.split('/');
  return {
    name: name || 'cluster',
    rest: rest.map(decodeURIComponent).join('/'),
    query: new URLSearchParams(query || ''),
  };
}

function go(hash) {
  if (location.hash === hash) render(); else location.hash = hash;
}

const stateLink = (id) => el('a', { href: '#/state/' + encodeURIComponent(id), class: 'id' }, id);

let timer = null;
let drawn = 0;

/**
 * Draws the current route; the cluster view refreshes every 2 s, the metrics view after
 * every sample. A drawing whose route was left while it waited for the API is dropped,
 * so a slow answer never paints over a newer view.
 */
async function render() {
  clearInterval(timer);
  const mine = ++drawn;
  const r = route();
  for (const a of document.querySelectorAll('nav a')) {
    a.classList.toggle('active', a.dataset.view === r.name ||
      (r.name === 'state' && a.dataset.view === 'states'));
  }
  const views = { cluster, states, state, chans, metrics };
  const draw = views[r.name] || cluster;
  const paint = async () => {
    try {
      const content = await draw(r);
      if (mine !== drawn) return;
      show(content);
      notice('');
    } catch (e) {
      if (mine === drawn) failure(e);
    }
  };
  await paint();
  if (draw === cluster && mine === drawn) timer = setInterval(paint, 2000);
}

// ---- Cluster --------------------------------------------------------------------------

async function cluster() {
  const local = await api('GET', '/cluster');
  const [leader, ready] = await Promise.all([
    api('GET', '/cluster?leader=true').catch(() => null),
    api('GET', '/readyz').then(() => true, () => false),
  ]);
  document.getElementById('node').textContent =
    `node ${local.id} · ${local.state}${local.leader ? '' : ' · no leader'}`;
  return [
    el('h2', {}, 'This node'),
    el('div', { class: 'card' }, facts([
      ['id', String(local.id)],
      ['role', local.state],
      ['ready', el('span', { class: ready ? 'ok' : 'bad' }, ready ? 'yes' : 'no (see /readyz)')],
      ['leader', local.leader === null ? 'none known' : String(local.leader)],
      ['term', String(local.term)],
      ['last log index', String(local.last_log_index ?? '–')],
      ['applied index', String(local.last_applied ?? '–')],
      ['disk', disk(local.disk)],
    ])),
    el('h2', {}, 'Members'),
    membersTable(local, leader),
    el('p', { class: 'muted' },
      'Lag is how many log entries the leader has that a member is not known to hold. ' +
      'A member is unreachable from the first Raft message of the leader\'s it did not ' +
      'answer until it answers again. While a voter\'s disk is low (below its reserve), ' +
      'writes are refused with 507 disk_full until room is made there.'),
  ];
}

/** A node's disk: free space and reserve, marked when writes are refused for it. */
function disk(d) {
  if (!d) return '–';
  const mib = (bytes) => (bytes / (1 << 20)).toFixed(1) + ' MiB';
  const text = `${mib(d.free_bytes)} free, reserve ${mib(d.reserve_bytes)}`;
  return d.low
    ? el('span', { class: 'bad' }, text + ' — low: writes refused (507 disk_full)')
    : text;
}

function membersTable(local, leader) {
  const known = leader || local;
  const rows = [];
  const add = (id, addr, role) => {
    const matched = id === known.leader ? known.last_log_index : known.replication?.[id];
    const lag = leader && matched !== undefined && matched !== null
      ? (leader.last_log_index ?? 0) - matched : null;
    rows.push(el('tr', {},
      el('td', {}, String(id) + (id === local.id ? ' (this node)' : '')),
      el('td', { class: 'id' }, addr),
      el('td', {}, role),
      num(matched),
      num(lag),
      el('td', {}, health(id, known, leader, matched, lag))));
  };
  for (const [id, addr] of Object.entries(known.members)) {
    add(Number(id), addr, Number(id) === known.leader ? 'leader' : 'voter');
  }
  for (const [id, addr] of Object.entries(known.learners)) add(Number(id), addr, 'learner');
  return table(['id', 'address', 'role', 'matched index#', 'lag#', 'health'], rows, 'No members.');
}

function health(id, known, leader, matched, lag) {
  if (!leader) return el('span', { class: 'warn' }, 'unknown: no leader answered');
  if (id === known.leader) {
    return leader.disk?.low
      ? el('span', { class: 'bad' }, 'leader, disk low: writes refused')
      : el('span', { class: 'ok' }, 'leader');
  }
  const contact = leader.peers?.[id];
  if (contact?.reachable && contact.disk_low) {
    return el('span', { class: 'bad' }, 'disk low: writes refused');
  }
  if (contact && !contact.reachable) {
    const heard = contact.last_heard_ms
      ? 'last heard ' + time(contact.last_heard_ms) : 'not heard from since the leader started';
    return el('span', { class: 'bad' }, 'unreachable, ' + heard);
  }
  if (matched === null || matched === undefined) return el('span', { class: 'bad' }, 'not answering');
  if (lag <= 10) return el('span', { class: 'ok' }, 'in sync');
  return el('span', { class: 'warn' }, `behind by ${lag}`);
}

// ---- States ---------------------------------------------------------------------------

async function states(r) {
  const q = r.query;
  const params = new URLSearchParams({ limit: String(PAGE) });
  for (const key of ['prefix', 'status', 'min_priority', 'after']) {
    if (q.get(key)) params.set(key, q.get(key));
  }
  const page = await api('GET', '/states?' + params);
  const sorted = [...page.states].sort((a, b) => naturally(a.id, b.id));
  const rows = sorted.map((s) => el('tr', {},
    el('td', {}, stateLink(s.id)),
    el('td', {}, badge(s.status), s.paused ? ' paused' : ''),
    el('td', { class: 'waits' }, waitsOn(s)),
    num(s.attempts ?? 0),
    el('td', { class: 'bad' }, s.last_error || ''),
    el('td', { class: 'lease' }, leaseText(s)),
    num(s.priority),
    el('td', {}, time(s.updated_at))));
  return [
    el('h2', {}, 'States'),
    stateFilters(q),
    table(['id', 'status', 'waits on', 'attempts#', 'last error', 'lease', 'priority#', 'updated'],
      rows, 'No states match.'),
    pager(q, page.next),
  ];
}

function stateFilters(q) {
  const prefix = el('input', { name: 'prefix', value: q.get('prefix') || '', placeholder: 'id prefix' });
  const status = el('select', { name: 'status' }, el('option', { value: '' }, 'any'),
    STATUSES.map((s) => el('option', { value: s, selected: q.get('status') === s }, s)));
  const priority = el('select', { name: 'min_priority' }, el('option', { value: '' }, 'any'),
    [...Array(10).keys()].map((p) =>
      el('option', { value: p, selected: q.get('min_priority') === String(p) }, '≥ ' + p)));
  return el('form', {
    class: 'filters',
    onsubmit: (e) => {
      e.preventDefault();
      const next = new URLSearchParams();
      for (const [key, input] of [['prefix', prefix], ['status', status], ['min_priority', priority]]) {
        if (input.value) next.set(key, input.value);
      }
      go('#/states?' + next);
    },
  },
  el('label', {}, 'prefix', prefix),
  el('label', {}, 'status', status),
  el('label', {}, 'priority', priority),
  el('button', { type: 'submit' }, 'Filter'),
  el('button', { type: 'button', onclick: () => render() }, 'Refresh'));
}

/** Next/previous page links: the cursors of earlier pages ride along in `back`. */
function pager(q, next) {
  const back = q.getAll('back');
  const to = (after, backs) => {
    const p = new URLSearchParams(q);
    p.delete('after');
    p.delete('back');
    if (after) p.set('after', after);
    for (const b of backs) p.append('back', b);
    return '#/' + route().name + '?' + p;
  };
  const previous = back.length
    ? el('a', { href: to(back[back.length - 1], back.slice(0, -1)) }, '← previous')
    : null;
  const following = next ? el('a', { href: to(next, [...back, q.get('after') || '']) }, 'next →') : null;
  return el('div', { class: 'pager' }, previous, following);
}

// ---- One state ------------------------------------------------------------------------

async function state(r) {
  const id = r.rest;
  const s = await api('GET', '/state/' + encodeURIComponent(id));
  const params = new URLSearchParams({ limit: String(HISTORY_PAGE) });
  if (r.query.get('before')) params.set('before', r.query.get('before'));
  const history = await api('GET', `/state/${encodeURIComponent(id)}/history?${params}`)
    .catch(() => null);
  return [
    el('h2', {}, 'State ', el('span', { class: 'id' }, s.id)),
    el('div', { class: 'card' },
      facts([
        ['status', badge(s.status)],
        ['paused', s.paused ? 'yes' : 'no'],
        ['priority', String(s.priority)],
        ['version', String(s.version)],
        ['created', time(s.created_at)],
        ['updated', time(s.updated_at)],
        ['waits on', waitsOn(s) || 'nothing'],
        ['lease', s.lease
          ? `${s.callback ? 'callback' : 'worker'}, token ${s.lease.token}, taken ` +
            `${time(s.lease.granted_at)}, expires ${time(s.lease.expires_at)}`
          : 'none'],
        ['callback', s.callback ? `${s.callback.url} (timeout ${s.callback.timeout_ms} ms)` : 'none (polled)'],
        ['callback attempts', s.callback ? attemptsText(s) : undefined],
        ['deliveries', s.max_deliveries
          ? `${s.deliveries} of ${s.max_deliveries}` : `${s.deliveries ?? 0} (no limit)`],
        ['kept when done', s.retain_ms ? `${s.retain_ms} ms` : 'for ever'],
        ['last error', s.last_error ? el('span', { class: 'bad' }, s.last_error) : undefined],
      ]),
      stateActions(s)),
    el('h2', {}, 'Data'), json(s.data ?? null),
    el('h2', {}, `Selects (${s.selects.length})`), selectsTable(s.selects),
    el('h2', {}, `Results (${s.results.length})`), resultsTable(s.results),
    history && el('h2', {}, 'History (newest first)'),
    history && historyTable(history.events),
    history && historyPager(r, history.next),
  ];
}

/**
 * Attempts against the maximum, and when the next comes: after a failed attempt the
 * callback's lease is held until the backoff ends, so its expiry is the next attempt.
 */
function attemptsText(s) {
  const made = s.attempts ?? 0;
  let text = `${made} of ${s.max_attempts ?? '?'} since the last update`;
  if (s.status === 'failed') return text + ', gave up';
  if (made > 0 && s.lease) text += `, next attempt ${time(s.lease.expires_at)}`;
  return text;
}

/** A case as a line: `recv orders`, `send jobs {"n":1}`, `timer … (in 5 s)`, `default`. */
function caseText(c) {
  switch (c.op) {
    case 'recv': return `recv ${c.chan}`;
    case 'send': return `send ${c.chan} ${JSON.stringify(c.data)}`;
    case 'timer': return c.at ? `timer ${time(c.at)}` : `timer after ${c.after_ms} ms`;
    default: return c.op;
  }
}

/** One row per case: the select, the case's number and what it does. */
function selectsTable(selects) {
  const rows = selects.flatMap((select) => select.cases.map((c, i) => el('tr', {},
    el('td', { class: 'id' }, i === 0 ? select.id : ''),
    num(i),
    el('td', { class: 'id case' }, caseText(c)))));
  return table(['select', 'case#', 'waits for'], rows, 'No selects: the state waits on nothing.');
}

/** One row per completed select: which case fired and what it brought. */
function resultsTable(results) {
  const rows = results.map((res) => el('tr', {},
    num(res.seq),
    el('td', { class: 'id' }, res.select),
    num(res.case),
    el('td', { class: 'id case' }, res.chan ? `${res.op} ${res.chan}` : res.op),
    el('td', { class: res.ok ? 'ok' : 'bad' }, res.ok ? 'ok' : 'not ok'),
    el('td', { class: 'id' }, res.error ?? (res.data === undefined ? '' : JSON.stringify(res.data))),
    el('td', {}, time(res.at))));
  return table(['seq#', 'select', 'case#', 'fired', '', 'value or error', 'at'], rows,
    'No results yet.');
}

/** Older/newer links of the history: `before` cursors, the newer ones kept in `newer`. */
function historyPager(r, next) {
  const base = '#/state/' + encodeURIComponent(r.rest);
  const newer = r.query.getAll('newer');
  const to = (before, newers) => {
    const p = new URLSearchParams();
    if (before) p.set('before', before);
    for (const n of newers) p.append('newer', n);
    return base + (p.toString() ? '?' + p : '');
  };
  const newerLink = newer.length || r.query.get('before')
    ? el('a', { href: to(newer[newer.length - 1], newer.slice(0, -1)) }, '← newer')
    : null;
  const olderLink = next !== null && next !== undefined
    ? el('a', { href: to(String(next), [...newer, r.query.get('before') || '']) }, 'older →')
    : null;
  return el('div', { class: 'pager' }, newerLink, olderLink);
}

function stateActions(s) {
  const path = '/state/' + encodeURIComponent(s.id);
  const act = (label, method, suffix, opts = {}) => el('button', {
    type: 'button',
    class: opts.danger ? 'danger' : null,
    disabled: opts.disabled,
    onclick: async () => {
      if (opts.confirm && !window.confirm(opts.confirm)) return;
      try {
        await api(method, path + suffix);
        if (opts.after) go(opts.after); else render();
      } catch (e) {
        failure(e);
      }
    },
  }, label);
  const lease = s.lease ? '/lease?token=' + encodeURIComponent(s.lease.token) : '';
  return el('div', { class: 'actions' },
    act('Retry', 'POST', '/retry', { disabled: s.status !== 'failed' }),
    s.paused ? act('Resume', 'POST', '/resume') : act('Pause', 'POST', '/pause'),
    act('Release lease', 'DELETE', lease, { disabled: !s.lease }),
    act('Delete', 'DELETE', '', {
      danger: true,
      confirm: `Delete state ${s.id}? Its blocked selects are withdrawn.`,
      after: '#/states',
    }),
    el('button', { type: 'button', onclick: () => render() }, 'Refresh'));
}

function historyTable(events) {
  const rows = events.map((e) => {
    const { seq, at, index, event, ...rest } = e;
    return el('tr', {},
      num(seq), el('td', {}, time(at)), num(index), el('td', {}, event),
      el('td', { class: 'id' }, Object.keys(rest).length ? JSON.stringify(rest) : ''));
  });
  return table(['seq#', 'at', 'raft index#', 'event', 'details'], rows, 'No events.');
}

// ---- Channels -------------------------------------------------------------------------

async function chans(r) {
  const q = r.query;
  const params = new URLSearchParams({ limit: String(PAGE) });
  for (const key of ['prefix', 'after']) if (q.get(key)) params.set(key, q.get(key));
  const page = await api('GET', '/chans?' + params);
  const prefix = el('input', { value: q.get('prefix') || '', placeholder: 'name prefix' });
  const rows = page.chans.map((c) => el('tr', {},
    el('td', { class: 'id' }, c.name),
    num(c.capacity), num(c.len), num(c.senders), num(c.receivers), num(c.discarded ?? 0),
    el('td', {}, c.closed ? el('span', { class: 'bad' }, 'closed') : 'open'),
    el('td', {}, chanActions(c))));
  return [
    el('h2', {}, 'Channels'),
    el('form', {
      class: 'filters',
      onsubmit: (e) => {
        e.preventDefault();
        go('#/chans' + (prefix.value ? '?' + new URLSearchParams({ prefix: prefix.value }) : ''));
      },
    }, el('label', {}, 'prefix', prefix), el('button', { type: 'submit' }, 'Filter'),
    el('button', { type: 'button', onclick: () => render() }, 'Refresh')),
    table(['name', 'capacity#', 'length#', 'waiting senders#', 'waiting receivers#',
      'discarded by close#', '', 'actions'],
      rows, 'No channels: an implicit channel that is empty and has no waiters stores nothing.'),
    pager(q, page.next),
  ];
}

/**
 * Send, try-receive and close, each after a confirmation that says what it will do; the
 * answer is shown as a note above the view.
 */
function chanActions(c) {
  const path = '/chan/' + encodeURIComponent(c.name);
  const run = async (question, method, suffix, body, done) => {
    if (!window.confirm(question)) return;
    try {
      const answer = await api(method, path + suffix, body);
      await render();
      notice(done(answer), true);
    } catch (e) {
      if (e instanceof ApiFailure && e.code === 'would_block') {
        notice(`Nothing to receive on ${c.name} now.`, true);
      } else {
        failure(e);
      }
    }
  };
  const value = el('input', { class: 'value', placeholder: 'JSON value', 'aria-label': 'value to send' });
  const send = () => {
    let body;
    try {
      body = JSON.parse(value.value);
    } catch (_) {
      notice('The value to send must be JSON, e.g. {"n": 1} or "text".');
      return;
    }
    run(`Send ${value.value} on ${c.name}?`, 'POST', '/send', body,
      (a) => a?.status === 'parked'
        ? `Sent on ${c.name}: parked until a receiver takes it.` : `Sent on ${c.name}.`);
  };
  return el('div', { class: 'actions' },
    value,
    el('button', { type: 'button', disabled: c.closed, onclick: send }, 'Send'),
    el('button', {
      type: 'button',
      onclick: () => run(`Receive one value from ${c.name} now (try, no wait)? It is taken off the channel.`,
        'POST', '/recv?wait=0', undefined, (a) => a.ok
          ? `Received from ${c.name}: ${JSON.stringify(a.data)}` : `${c.name} is closed and drained.`),
    }, 'Receive'),
    el('button', {
      type: 'button',
      class: 'danger',
      disabled: c.closed,
      onclick: () => run(`Close ${c.name}? Waiting receivers get ok: false; parked sends are discarded.`,
        'POST', '/close', undefined, () => `Closed ${c.name}.`),
    }, 'Close'));
}

// ---- Metrics (the plots are drawn by metrics.js) --------------------------------------

async function metrics() {
  return [el('h2', {}, 'This node, over the last 5 minutes'), window.SlctMetrics.panel()];
}

// ---- Start ----------------------------------------------------------------------------

function start() {
  document.getElementById('login').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = document.getElementById('token');
    if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
    input.value = '';
    showLogin(false);
    render();
  });
  document.getElementById('logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(false);
    render();
  });
  showLogin(false);
  window.addEventListener('hashchange', render);
  window.SlctMetrics.start((path) => api('GET', path, undefined, { text: true }));
  render();
}

document.addEventListener('DOMContentLoaded', start);

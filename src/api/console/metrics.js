// slct console: live rates and latencies from this node's own /metrics.
//
// Every 2 s the page reads /metrics (Prometheus text), reduces it to a few numbers (one
// sample) and keeps the last 5 minutes of samples in a ring buffer. Rates come from
// the differences of counters between samples, latency quantiles from the differences
// of histogram buckets (interpolated within a bucket, as Prometheus' histogram_quantile
// does). The numbers describe this node only: open another node's console for its own.
// The console's own requests (/metrics, the page and its files) are left out.
'use strict';

window.SlctMetrics = (() => {
  const EVERY_MS = 2000;
  const KEEP = 150; // 5 minutes
  const WINDOW = 15; // samples over which latency quantiles are taken (30 s)
  const SKIP_ROUTES = new Set(['/metrics', '/', '/ui/{path}']);
  const SVG = 'http://www.w3.org/2000/svg';

  const samples = [];
  let lastError = null;
  let panelNode = null;

  /** Parses Prometheus text into [{name, labels, value}]. */
  function parse(text) {
    const out = [];
    const labelRe = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      for (const [, key, raw] of (m[3] || '').matchAll(labelRe)) {
        labels[key] = raw.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      }
      out.push({ name: m[1], labels, value: Number(m[4]) });
    }
    return out;
  }

  /** Reduces one scrape to the numbers the plots need. */
  function reduce(series, t) {
    const s = {
      t, requests: 0, errors: 0, routes: {}, buckets: {},
      states: {}, queued: {}, callbacks: {}, callbacksFailed: 0,
      applied: 0, longPolls: 0,
    };
    const route = (l) => `${l.method} ${l.route}`;
    const routeEntry = (key) => (s.routes[key] ||= { count: 0, buckets: {} });
    for (const { name, labels: l, value } of series) {
      if (name === 'slct_http_requests_total' && !SKIP_ROUTES.has(l.route)) {
        s.requests += value;
        if (Number(l.status) >= 500) s.errors += value;
        routeEntry(route(l)).count += value;
      } else if (name === 'slct_http_request_duration_seconds_bucket' && !SKIP_ROUTES.has(l.route)) {
        s.buckets[l.le] = (s.buckets[l.le] || 0) + value;
        const b = routeEntry(route(l)).buckets;
        b[l.le] = (b[l.le] || 0) + value;
      } else if (name === 'slct_states') {
        s.states[l.kind] = value;
      } else if (name === 'slct_queued') {
        s.queued[l.kind] = value;
      } else if (name === 'slct_callback_attempts_total') {
        s.callbacks[l.kind] = value;
      } else if (name === 'slct_raft_last_applied') {
        s.applied = value;
      } else if (name === 'slct_long_polls') {
        s.longPolls = value;
      }
    }
    s.callbacksAll = Object.values(s.callbacks).reduce((a, b) => a + b, 0);
    s.callbacksFailed = (s.callbacks.failed || 0) + (s.callbacks.gave_up || 0);
    return s;
  }

  /** Per-second increase of `get(sample)` from a to b; null across a counter reset. */
  function rate(a, b, get) {
    const dv = get(b) - get(a);
    const dt = (b.t - a.t) / 1000;
    return dt > 0 && dv >= 0 ? dv / dt : null;
  }

  /** The q-quantile (0..1) of the observations between two cumulative bucket maps. */
  function quantile(q, from, to) {
    const bounds = Object.keys(to)
      .map((le) => ({ le, upper: le === '+Inf' ? Infinity : Number(le) }))
      .sort((x, y) => x.upper - y.upper);
    const counts = bounds.map(({ le }) => (to[le] || 0) - ((from && from[le]) || 0));
    const total = counts[counts.length - 1];
    if (!total || total < 0) return null;
    const rank = q * total;
    for (let i = 0; i < bounds.length; i++) {
      if (counts[i] >= rank) {
        const lower = i ? bounds[i - 1].upper : 0;
        const upper = bounds[i].upper;
        if (upper === Infinity) return lower;
        const below = i ? counts[i - 1] : 0;
        const inBucket = counts[i] - below;
        return lower + (upper - lower) * (inBucket ? (rank - below) / inBucket : 1);
      }
    }
    return null;
  }

  /** One value per sample (from the second on), computed from it and an earlier one. */
  function series(compute, back = 1) {
    const out = [];
    for (let i = 1; i < samples.length; i++) {
      out.push({ t: samples[i].t, v: compute(samples[Math.max(0, i - back)], samples[i]) });
    }
    return out;
  }

  const gauge = (get) => samples.map((s) => ({ t: s.t, v: get(s) }));
  const ms = (seconds) => (seconds === null ? null : seconds * 1000);

  /** The plots: title, unit, one or two lines. */
  function plots() {
    const latency = (q) => series((a, b) => ms(quantile(q, a.buckets, b.buckets)), WINDOW);
    return [
      ['requests/s (5xx in orange)', '/s', series((a, b) => rate(a, b, (s) => s.requests)),
        series((a, b) => rate(a, b, (s) => s.errors))],
      ['latency p50 / p99 (30 s window)', 'ms', latency(0.5), latency(0.99)],
      ['Raft entries applied/s', '/s', series((a, b) => rate(a, b, (s) => s.applied))],
      ['callback attempts/s (failed in orange)', '/s',
        series((a, b) => rate(a, b, (s) => s.callbacksAll)),
        series((a, b) => rate(a, b, (s) => s.callbacksFailed))],
      ['states waiting', '', gauge((s) => s.states.waiting ?? null)],
      ['states pending / leased', '', gauge((s) => s.states.pending ?? null),
        gauge((s) => s.states.leased ?? null)],
      ['states failed', '', gauge((s) => s.states.failed ?? null)],
      ['blocked senders / receivers', '', gauge((s) => s.queued.senders ?? null),
        gauge((s) => s.queued.receivers ?? null)],
      ['armed timers', '', gauge((s) => s.queued.timers ?? null)],
      ['long-polls in progress', '', gauge((s) => s.longPolls)],
    ];
  }

  function format(v, unit) {
    if (v === null || v === undefined || Number.isNaN(v)) return '–';
    const digits = Math.abs(v) >= 100 || Number.isInteger(v) ? 0 : Math.abs(v) >= 10 ? 1 : 2;
    return v.toFixed(digits) + (unit ? ' ' + unit : '');
  }

  /** An SVG sparkline of one or two lines over the kept window. */
  function sparkline(lines) {
    const W = 300;
    const H = 48;
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('preserveAspectRatio', 'none');
    const now = samples.length ? samples[samples.length - 1].t : 0;
    const span = KEEP * EVERY_MS;
    const values = lines.flat().map((p) => p.v).filter((v) => v !== null && Number.isFinite(v));
    const max = Math.max(1e-9, ...values);
    lines.forEach((line, n) => {
      let points = [];
      const flush = () => {
        if (points.length) {
          const poly = document.createElementNS(SVG, 'polyline');
          poly.setAttribute('points', points.join(' '));
          if (n) poly.setAttribute('class', 'second');
          svg.append(poly);
        }
        points = [];
      };
      for (const { t, v } of line) {
        if (v === null || !Number.isFinite(v)) { flush(); continue; }
        const x = W - ((now - t) / span) * W;
        const y = H - 2 - (v / max) * (H - 4);
        points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
      }
      flush();
    });
    return svg;
  }

  function plotCard([title, unit, ...lines]) {
    const last = (line) => (line.length ? line[line.length - 1].v : null);
    const value = lines.map((l) => format(last(l), unit)).join(' / ');
    const card = document.createElement('div');
    card.className = 'plot';
    const t = document.createElement('div');
    t.className = 'title';
    t.textContent = title;
    const v = document.createElement('div');
    v.className = 'value';
    v.textContent = value;
    card.append(t, v, sparkline(lines));
    return card;
  }

  /** Rate and latency by route over the last 30 s. */
  function routeTable() {
    const b = samples[samples.length - 1];
    const a = samples[Math.max(0, samples.length - 1 - WINDOW)];
    const table = document.createElement('table');
    const row = (cells, tag) => {
      const tr = document.createElement('tr');
      cells.forEach((c, i) => {
        const cell = document.createElement(tag);
        if (i) cell.className = 'num';
        cell.textContent = c;
        tr.append(cell);
      });
      return tr;
    };
    const head = document.createElement('thead');
    head.append(row(['route', 'requests/s', 'p50', 'p99', 'total'], 'th'));
    const body = document.createElement('tbody');
    for (const key of Object.keys(b.routes).sort()) {
      const now = b.routes[key];
      const then = a.routes[key] || { count: 0, buckets: {} };
      const perSec = a === b ? null : (now.count - then.count) / ((b.t - a.t) / 1000);
      body.append(row([
        key,
        format(perSec, ''),
        format(ms(quantile(0.5, then.buckets, now.buckets)), 'ms'),
        format(ms(quantile(0.99, then.buckets, now.buckets)), 'ms'),
        String(now.count),
      ], 'td'));
    }
    table.append(head, body);
    return table;
  }

  function draw() {
    if (!panelNode || !panelNode.isConnected) return;
    const parts = [];
    if (lastError) {
      const p = document.createElement('p');
      p.className = 'bad';
      p.textContent = 'Cannot read /metrics: ' + lastError;
      parts.push(p);
    }
    if (samples.length < 2) {
      const p = document.createElement('p');
      p.className = 'muted';
      p.textContent = 'Collecting samples (one every 2 s)…';
      parts.push(p);
    }
    const grid = document.createElement('div');
    grid.className = 'plots';
    grid.append(...plots().map(plotCard));
    parts.push(grid);
    if (samples.length) {
      const h = document.createElement('h2');
      h.textContent = 'By route, last 30 s';
      parts.push(h, routeTable());
    }
    panelNode.replaceChildren(...parts);
  }

  /** Starts sampling with `fetchText(path)`, which resolves to the body. */
  function start(fetchText) {
    const sample = async () => {
      try {
        const text = await fetchText('/metrics');
        samples.push(reduce(parse(text), Date.now()));
        if (samples.length > KEEP) samples.shift();
        lastError = null;
      } catch (e) {
        lastError = e.message;
      }
      draw();
    };
    sample();
    setInterval(sample, EVERY_MS);
  }

  /** The element the metrics view shows; redrawn after every sample. */
  function panel() {
    panelNode = document.createElement('div');
    draw();
    return panelNode;
  }

  return { start, panel, parse, quantile };
})();

'use strict';
// herald's web console: reads the gateway's JSON API (the broker's admin
// calls, as heraldctl makes them) and draws it. No framework, no build step.
// Every number shown is the broker's; the rates are differences between two
// stats answers.

const POLL_MS = 2000;
const HISTORY_MS = 5 * 60 * 1000;
const history = [];   // { t, published, handled }
let page = 'overview';
let pending = null;    // the action the confirmation panel waits for
let detail = null;     // the dead letter shown
let hex = false;

const $ = (id) => document.getElementById(id);

async function api(path, form) {
  const opts = form ? { method: 'POST', body: new URLSearchParams(form) } : {};
  const r = await fetch(path, opts);
  let body;
  try { body = await r.json(); } catch (e) { body = { error: `${r.status} ${r.statusText}` }; }
  if (!r.ok) throw new Error(body.error || `${r.status}`);
  return body;
}

function text(v) {
  if (v === null || v === undefined) return '-';
  if (Array.isArray(v)) return v.join(',');
  if (typeof v === 'number' && !Number.isInteger(v)) return v.toFixed(3);
  if (typeof v === 'object') return Object.entries(v).filter(([, n]) => n).map(([k, n]) => `${k}=${n}`).join(' ') || '-';
  return String(v);
}

// rows: objects; cols: [key, title?]; rowKey(row) names the row (data-row).
function table(el, rows, cols, rowKey, onClick) {
  const t = $(el);
  t.textContent = '';
  const head = t.insertRow();
  for (const [k, title] of cols) {
    const th = document.createElement('th');
    th.textContent = title || k;
    head.appendChild(th);
  }
  for (const row of rows) {
    const tr = t.insertRow();
    tr.dataset.row = rowKey(row);
    if (onClick) { tr.classList.add('clickable'); tr.onclick = () => onClick(row); }
    for (const [k] of cols) {
      const td = tr.insertCell();
      const v = row[k];
      td.dataset.col = k;
      td.textContent = text(v);
      if (typeof v === 'number') td.classList.add('num');
      if (k === 'error') td.classList.add('err');
    }
  }
  if (rows.length === 0) {
    const td = t.insertRow().insertCell();
    td.colSpan = cols.length;
    td.textContent = 'none';
  }
}

function rate(key) {
  if (history.length < 2) return null;
  const a = history[history.length - 2], b = history[history.length - 1];
  const dt = (b.t - a.t) / 1000;
  return dt > 0 ? (b[key] - a[key]) / dt : null;
}

function drawChart() {
  const c = $('chart'), g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  const pts = [];
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1], b = history[i], dt = (b.t - a.t) / 1000;
    if (dt > 0) pts.push({ t: b.t, pub: (b.published - a.published) / dt, del: (b.handled - a.handled) / dt });
  }
  const now = Date.now(), max = Math.max(1, ...pts.map((p) => Math.max(p.pub, p.del)));
  g.fillStyle = '#667';
  g.font = '11px sans-serif';
  g.fillText(`${Math.round(max)}/s`, 4, 12);
  const x = (t) => c.width - ((now - t) / HISTORY_MS) * c.width;
  const y = (v) => c.height - 4 - (v / max) * (c.height - 20);
  for (const [key, color] of [['pub', '#2b7bd6'], ['del', '#2e9e5b']]) {
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p[key])) : g.moveTo(x(p.t), y(p[key]))));
    g.stroke();
  }
}

function renderStats(st) {
  const topics = st.topics.map((t) => ({ ...t }));
  const published = topics.reduce((s, t) => s + t.published, 0);
  const handled = st.subscriptions.reduce((s, x) => s + x.succeeded + x.failed, 0);
  history.push({ t: Date.now(), published, handled });
  while (history.length && history[0].t < Date.now() - HISTORY_MS) history.shift();
  const prev = history.length > 1 ? history[history.length - 2].topics : null;
  history[history.length - 1].topics = Object.fromEntries(topics.map((t) => [t.name, t.published]));
  if (prev && history.length > 1) {
    const dt = (history[history.length - 1].t - history[history.length - 2].t) / 1000;
    for (const t of topics) t.rate = prev[t.name] !== undefined && dt > 0 ? (t.published - prev[t.name]) / dt : null;
  }
  table('topics', topics, [['name'], ['published'], ['rate', 'per second']], (t) => t.name);
  table('subscriptions', st.subscriptions,
    [['topic'], ['function'], ['ready'], ['delayed'], ['inflight', 'in flight'], ['dead'], ['succeeded'], ['failed']],
    (s) => `${s.topic}→${s.function}`);
  table('functions', st.functions,
    [['name'], ['kind'], ['invocations'], ['errors'], ['timeouts'], ['rejected'], ['crashed'], ['lost'],
      ['p50_ms', 'p50 ms'], ['p99_ms', 'p99 ms'], ['gb_seconds', 'GB-s'], ['cold_starts', 'cold starts'],
      ['warm'], ['recycles']],
    (f) => f.name);
  const workers = st.workers.map((w) => ({ ...w, refused: (w.refused || []).map((r) => `${r.function}: ${r.reason}`) }));
  table('workers', workers,
    [['id'], ['host'], ['pid'], ['functions'], ['slots'], ['busy'], ['last_seen_ms', 'last seen (ms ago)'],
      ['refused', 'refused functions']],
    (w) => w.id);
  table('refused', [st.refused || {}], [['publish'], ['worker'], ['admin']], () => 'refused');
  drawChart();
}

async function poll() {
  try {
    renderStats(await api('/api/stats'));
    if (page === 'schedules') {
      table('schedules', await api('/api/schedules'),
        [['name'], ['topic'], ['function'], ['spec'], ['timezone'], ['catch_up', 'catch up'], ['next'], ['last'],
          ['fired']],
        (s) => s.name);
    }
    const r = rate('published');
    $('status').textContent = `broker up · ${r === null ? '…' : r.toFixed(1)} published/s`;
    $('status').classList.remove('down');
  } catch (e) {
    $('status').textContent = `broker: ${e.message}`;
    $('status').classList.add('down');
  }
}

// ---- dead letters -----------------------------------------------------------

function filter() {
  const f = new FormData($('dlq-filter'));
  return { function: f.get('function').trim(), topic: f.get('topic').trim(), outcome: f.get('outcome') };
}

async function loadDlq() {
  const f = filter();
  const q = new URLSearchParams({ limit: '500' });
  if (f.function) q.set('function', f.function);
  if (f.topic) q.set('topic', f.topic);
  try {
    let rows = await api(`/api/dlq?${q}`);
    if (f.outcome) rows = rows.filter((d) => d.outcome === f.outcome);
    table('dlq', rows,
      [['id'], ['message_id', 'message id'], ['topic'], ['function'], ['attempts'], ['outcome'], ['error'],
        ['failed_at', 'failed at'], ['payload_bytes', 'bytes']],
      (d) => String(d.id), (d) => show(d.id));
  } catch (e) {
    $('dlq-message').textContent = e.message;
  }
}

function hexdump(bytes) {
  const out = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const line = Array.from(bytes.slice(i, i + 16), (b) => b.toString(16).padStart(2, '0')).join(' ');
    out.push(`${i.toString(16).padStart(8, '0')}  ${line}`);
  }
  return out.join('\n');
}

function payloadBytes(d) {
  if (d.payload_encoding === 'base64') return Uint8Array.from(atob(d.payload), (c) => c.charCodeAt(0));
  return new TextEncoder().encode(d.payload);
}

function renderDetail() {
  const d = detail;
  $('detail-id').textContent = d.id;
  const keys = ['message_id', 'topic', 'function', 'attempts', 'outcome', 'failed_at', 'payload_bytes'];
  table('detail-keys', keys.map((k) => ({ key: k, value: d[k] })).concat(
    Object.entries(d.attributes || {}).map(([k, v]) => ({ key: `attribute ${k}`, value: v }))),
  [['key'], ['value']], (r) => r.key);
  table('detail-history', d.history || [],
    [['attempt'], ['outcome'], ['worker'], ['started_at', 'started at'], ['duration_ms', 'ms'], ['error']],
    (h) => String(h.attempt));
  $('detail-encoding').textContent = d.payload_encoding === 'base64' ? '(binary)' : '(UTF-8 text)';
  $('detail-payload').textContent = hex || d.payload_encoding === 'base64' ? hexdump(payloadBytes(d)) : d.payload;
  $('detail-hex').textContent = hex ? 'text' : 'hex';
  $('dlq-detail').hidden = false;
}

async function show(id) {
  try {
    detail = await api(`/api/dlq/${id}`);
    renderDetail();
  } catch (e) {
    $('dlq-message').textContent = e.message;
  }
}

// A replay or purge: a dry run says how many, the person confirms, then it runs.
async function ask(action, form) {
  try {
    const dry = await api(`/api/dlq/${action}`, { ...form, dry_run: '1' });
    pending = { action, form };
    $('confirm-text').textContent = `${action === 'replay' ? 'Replay' : 'Purge'} ${dry.count} dead letter${dry.count === 1 ? '' : 's'}?` +
      (action === 'purge' ? ' They are deleted for good.' : ' They go back onto their own queue, attempts reset.');
    $('confirm').hidden = false;
  } catch (e) {
    $('dlq-message').textContent = e.message;
  }
}

async function confirmed() {
  const p = pending;
  pending = null;
  $('confirm').hidden = true;
  if (!p) return;
  try {
    const r = await api(`/api/dlq/${p.action}`, p.form);
    $('dlq-message').textContent = `${p.action === 'replay' ? 'replayed' : 'purged'} ${r.count}`;
    $('dlq-detail').hidden = true;
    detail = null;
  } catch (e) {
    $('dlq-message').textContent = e.message;
  }
  loadDlq();
}

function matching() {
  const f = filter(), form = { all: '1' };
  if (f.function) form.function = f.function;
  if (f.topic) form.topic = f.topic;
  return form;
}

// ---- pages ---------------------------------------------------------------------

function go() {
  page = (location.hash || '#overview').slice(1);
  if (!$(`page-${page}`)) page = 'overview';
  for (const s of document.querySelectorAll('.page')) s.classList.toggle('active', s.id === `page-${page}`);
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.page === page);
  if (page === 'dlq') loadDlq();
  poll();
}

$('dlq-filter').onsubmit = (e) => { e.preventDefault(); loadDlq(); };
$('dlq-replay-all').onclick = () => ask('replay', matching());
$('dlq-purge-all').onclick = () => ask('purge', matching());
$('detail-replay').onclick = () => detail && ask('replay', { ids: String(detail.id) });
$('detail-purge').onclick = () => detail && ask('purge', { ids: String(detail.id) });
$('detail-hex').onclick = () => { hex = !hex; if (detail) renderDetail(); };
$('confirm-yes').onclick = confirmed;
$('confirm-no').onclick = () => { pending = null; $('confirm').hidden = true; };
window.onhashchange = go;
go();
setInterval(poll, POLL_MS);

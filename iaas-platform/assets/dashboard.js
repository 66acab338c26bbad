// The iaas-rs dashboard. Plain JavaScript, no dependencies: it talks to the platform's public
// JSON API from the same origin.
//
// - Tokens live in memory only (never localStorage): a reload signs the user out, and a script
//   injected elsewhere cannot read a stored token. The access token is refreshed with the
//   rotating refresh token shortly before it expires, and once more when a call is refused 401.
// - Instance status arrives over the WebSocket `/v1/ws` and updates rows in place; the list is
//   fetched only at sign-in, after a create, and when the socket reports an unknown instance.
// - A highly available PostgreSQL cluster has a page of its own (members and roles, the
//   replication lag as a chart, backups, switchover, scale, restore): opened from its row,
//   polled while open.
//   The lag history lives in this page only, for the last LAG_WINDOW_MS.
// - Everything from the API is written with textContent, never as HTML.
'use strict';

(() => {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // Refresh this long before the access token expires (seconds).
  const REFRESH_MARGIN_SECS = 60;
  // WebSocket reconnect backoff (milliseconds).
  const RECONNECT_MIN_MS = 500;
  const RECONNECT_MAX_MS = 15000;
  const EVENTS_PAGE_SIZE = 50;
  // Docker's short container id length.
  const SHORT_ID_LEN = 12;
  // Most bars the stats query asks buckets for; the chart sums them per action.
  const STATS_BUCKETS = 48;
  // How often an open cluster page asks for the replication state (milliseconds), and how
  // much of it the lag chart keeps.
  const LAG_POLL_MS = 5000;
  const LAG_WINDOW_MS = 10 * 60 * 1000;
  // The cluster page's buttons, disabled while one of their requests is under way.
  const CLUSTER_BUTTONS = ['take-backup', 'switchover', 'scale', 'restore'];
  // One colour per replica line of the lag chart, in member order.
  const SERIES_COLOURS = ['#4f46e5', '#d97706', '#0d9488', '#db2777', '#65a30d', '#7c3aed'];
  const ACTION_COLOURS = {
    created: '#3b82f6',
    started: '#16a34a',
    restarted: '#0d9488',
    stopped: '#64748b',
    stopping: '#94a3b8',
    starting: '#86efac',
    restarting: '#5eead4',
    deleting: '#fda4af',
    failed: '#dc2626',
    deleted: '#9f1239',
    failover: '#d97706',
  };

  const $ = (id) => {
    const element = document.getElementById(id);
    if (!element) throw new Error(`the page has no element #${id}`);
    return element;
  };

  const session = {
    access: null,
    refresh: null,
    accessExpiresAt: 0,
    username: null,
    refreshTimer: null,
    refreshing: null,
    socket: null,
    reconnectDelay: RECONNECT_MIN_MS,
    reconnectTimer: null,
  };
  // Every instance of the user, deleted ones included (the event filter lists them), by id.
  const instances = new Map();
  const rows = new Map();
  let eventsCursor = null;

  // ---- messages -------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function showError(error) {
    const text = error instanceof ApiError
      ? `${error.message} (${error.code})`
      : `${error && error.message ? error.message : error}`;
    $('error-text').textContent = text;
    $('error').hidden = false;
    $('message').hidden = true;
  }

  function clearError() {
    $('error').hidden = true;
    $('error-text').textContent = '';
  }

  let messageTimer = null;
  function showMessage(text) {
    const box = $('message');
    box.textContent = text;
    box.hidden = false;
    clearTimeout(messageTimer);
    messageTimer = setTimeout(() => { box.hidden = true; }, 6000);
  }

  // ---- HTTP -----------------------------------------------------------------------------

  // The JSON error body `{"error":{"code","message"}}` as an ApiError; anything else still
  // becomes one, naming the status.
  async function errorFrom(response) {
    let code = `http_${response.status}`;
    let message = `${response.status} ${response.statusText || 'error'}`;
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      }
    } catch (_) {
      // Not JSON: keep the status line.
    }
    return new ApiError(response.status, code, message);
  }

  async function request(method, path, body, { auth = true, retried = false } = {}) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (auth && session.access) headers.Authorization = `Bearer ${session.access}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch (error) {
      throw new ApiError(0, 'network', `the platform did not answer (${error.message})`);
    }
    if (response.status === 401 && auth && session.refresh && !retried) {
      await refreshTokens();
      return request(method, path, body, { auth, retried: true });
    }
    if (!response.ok) throw await errorFrom(response);
    if (response.status === 204) return null;
    return response.json();
  }

  // ---- session --------------------------------------------------------------------------

  function adoptTokens(pair) {
    session.access = pair.access_token;
    session.refresh = pair.refresh_token;
    session.accessExpiresAt = Date.now() + pair.expires_in * 1000;
    clearTimeout(session.refreshTimer);
    const inSecs = Math.max(5, pair.expires_in - REFRESH_MARGIN_SECS);
    session.refreshTimer = setTimeout(() => {
      refreshTokens().catch((error) => showError(error));
    }, inSecs * 1000);
  }

  // One refresh at a time: the refresh token rotates, and presenting a rotated one twice would
  // revoke the whole session family.
  function refreshTokens() {
    if (!session.refreshing) {
      const token = session.refresh;
      session.refreshing = request('POST', '/v1/auth/refresh', { refresh_token: token }, { auth: false })
        .then((pair) => { adoptTokens(pair); })
        .catch((error) => {
          signedOut();
          throw new ApiError(401, error.code || 'session_ended', `your session ended; sign in again (${error.message})`);
        })
        .finally(() => { session.refreshing = null; });
    }
    return session.refreshing;
  }

  function credentials() {
    return { username: $('username').value.trim(), password: $('password').value };
  }

  async function register() {
    clearError();
    const body = credentials();
    const user = await request('POST', '/v1/auth/register', body, { auth: false });
    showMessage(`Account ${user.username} created. Sign in to continue.`);
  }

  async function signIn() {
    clearError();
    const body = credentials();
    const pair = await request('POST', '/v1/auth/login', body, { auth: false });
    adoptTokens(pair);
    session.username = body.username;
    $('password').value = '';
    $('whoami').textContent = session.username;
    $('auth-view').hidden = true;
    $('app-view').hidden = false;
    $('session').hidden = false;
    setDefaultRange();
    await loadInstances();
    refreshQuota();
    connectLive();
    loadSessions().catch((error) => showError(error));
    await searchEvents();
  }

  async function signOut() {
    const token = session.refresh;
    signedOut();
    if (token) {
      await request('POST', '/v1/auth/logout', { refresh_token: token }, { auth: false });
    }
    showMessage('Signed out.');
  }

  // Forgets everything of the session and shows the sign-in form.
  function signedOut() {
    closeCluster();
    clearTimeout(session.refreshTimer);
    clearTimeout(session.reconnectTimer);
    session.access = null;
    session.refresh = null;
    session.username = null;
    const socket = session.socket;
    session.socket = null;
    if (socket) socket.close(1000, 'signed out');
    instances.clear();
    rows.clear();
    $('instances').tBodies[0].replaceChildren();
    $('events').tBodies[0].replaceChildren();
    $('sessions').tBodies[0].replaceChildren();
    $('credentials').hidden = true;
    $('quota').textContent = '';
    $('app-view').hidden = true;
    $('session').hidden = true;
    $('auth-view').hidden = false;
    setLive('off');
  }

  // ---- instances ------------------------------------------------------------------------

  const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  const formatTime = (iso) => {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : dateTime.format(date);
  };

  // What the account may hold and holds; refreshed after every change the user makes here.
  async function loadQuota() {
    const { limits, usage } = await request('GET', '/v1/quota');
    $('quota').textContent = `Quota: ${usage.instances} of ${limits.instances} instances · `
      + `${usage.millicpus} of ${limits.millicpus} millicores · ${usage.memory_mib} of ${limits.memory_mib} MiB`;
  }

  function refreshQuota() {
    loadQuota().catch((error) => showError(error));
  }

  async function loadInstances() {
    const body = await request('GET', '/v1/instances');
    for (const instance of body.instances) {
      instances.set(instance.id, instance);
      renderInstance(instance);
    }
    renderInstanceFilter();
  }

  function element(tag, { className, text, attrs } = {}) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }

  function actionButton(label, name, handler) {
    const button = element('button', {
      className: 'button small secondary',
      text: label,
      attrs: { type: 'button', 'aria-label': `${label} ${name}`, 'data-action': label.toLowerCase() },
    });
    button.addEventListener('click', () => {
      button.disabled = true;
      handler()
        .catch((error) => showError(error))
        .finally(() => updateButtons(button.closest('tr')));
    });
    return button;
  }

  // Creates or updates the row of `instance`; a deleted instance's row goes away.
  function renderInstance(instance) {
    let row = rows.get(instance.id);
    if (instance.status === 'deleted') {
      if (cluster.id === instance.id) closeCluster();
      if (row) row.remove();
      rows.delete(instance.id);
      updateInstancesSummary();
      return;
    }
    if (!row) {
      row = element('tr', { attrs: { 'data-instance-id': instance.id } });
      const name = element('th', { attrs: { scope: 'row' } });
      name.append(element('span', { className: 'name', text: instance.name }));
      name.append(element('span', { className: 'id', text: instance.id.slice(0, 8) }));
      const kind = element('td', { className: 'kind' });
      kind.append(element('span', { className: `kind-tag kind-${instance.kind || instance.spec.kind}`, text: instance.kind || instance.spec.kind }));
      const status = element('td', { className: 'status-cell' });
      status.append(element('span', { className: 'status' }));
      const created = element('td', { className: 'created', text: instance.created_at ? formatTime(instance.created_at) : '' });
      const actions = element('td', { className: 'row-actions' });
      if (isCluster(instance)) {
        actions.append(actionButton('Cluster', instance.name, async () => openCluster(instance.id)));
      }
      actions.append(
        actionButton('Start', instance.name, () => act(instance.id, 'start')),
        actionButton('Stop', instance.name, () => act(instance.id, 'stop')),
        actionButton('Delete', instance.name, () => remove(instance.id)),
      );
      actions.lastChild.classList.add('danger');
      row.append(name, kind, status, created, actions);
      $('instances').tBodies[0].append(row);
      rows.set(instance.id, row);
    }
    const badge = row.querySelector('.status');
    badge.textContent = instance.status;
    badge.className = `status status-${instance.status}`;
    row.dataset.status = instance.status;
    updateButtons(row);
    updateInstancesSummary();
  }

  // Which actions make sense in the row's status (the API refuses the others with 409).
  function updateButtons(row) {
    if (!row) return;
    const status = row.dataset.status;
    const button = (action) => row.querySelector(`button[data-action="${action}"]`);
    button('start').disabled = !(status === 'stopped' || status === 'failed');
    button('stop').disabled = status !== 'running';
    // A delete already under way can be asked again (it retries the removal).
    button('delete').disabled = status === 'deleted';
    const open = button('cluster');
    if (open) open.disabled = status === 'deleted';
  }

  function updateInstancesSummary() {
    const count = rows.size;
    $('instances-empty').hidden = count > 0;
    $('instances-count').textContent = count === 1 ? '1 instance' : `${count} instances`;
  }

  function renderInstanceFilter() {
    const select = $('filter-instance');
    const chosen = select.value;
    const options = [element('option', { text: 'Any instance', attrs: { value: '' } })];
    for (const instance of instances.values()) {
      const label = instance.status === 'deleted' ? `${instance.name} (deleted)` : instance.name;
      options.push(element('option', { text: label, attrs: { value: instance.id } }));
    }
    select.replaceChildren(...options);
    select.value = instances.has(chosen) ? chosen : '';
  }

  function setStatus(id, status) {
    const instance = instances.get(id);
    if (!instance) return false;
    instance.status = status;
    renderInstance(instance);
    return true;
  }

  async function act(id, action) {
    clearError();
    const instance = instances.get(id);
    showMessage(`${action === 'start' ? 'Starting' : 'Stopping'} ${instance ? instance.name : id}…`);
    const before = instance ? instance.status : undefined;
    // Answered at once with the instance in its transitional status; the outcome arrives as a
    // live frame. A frame that came before the answer is newer than it: it is kept.
    const accepted = await request('POST', `/v1/instances/${encodeURIComponent(id)}/${action}`);
    const known = instances.get(id);
    if (accepted && accepted.instance && (!known || known.status === before)) {
      instances.set(id, accepted.instance);
      renderInstance(accepted.instance);
    }
  }

  async function remove(id) {
    const instance = instances.get(id);
    const name = instance ? instance.name : id;
    if (!window.confirm(`Delete ${name} and its data? This cannot be undone.`)) return;
    clearError();
    const before = instance ? instance.status : undefined;
    const deleting = await request('DELETE', `/v1/instances/${encodeURIComponent(id)}?purge=true`);
    const known = instances.get(id);
    if (!known || known.status === before) {
      instances.set(deleting.id, deleting);
      renderInstance(deleting);
    }
    renderInstanceFilter();
    refreshQuota();
    showMessage(`Deleting ${name}…`);
  }

  // Splits a command line into arguments: spaces separate, single or double quotes keep
  // spaces, a backslash escapes the next character outside single quotes.
  function splitCommand(text) {
    const args = [];
    let current = '';
    let quote = null;
    let inArg = false;
    for (let i = 0; i < text.length; i += 1) {
      const c = text[i];
      if (quote) {
        if (c === quote) quote = null;
        else if (c === '\\' && quote === '"' && i + 1 < text.length) current += text[++i];
        else current += c;
      } else if (c === '"' || c === "'") {
        quote = c;
        inArg = true;
      } else if (c === '\\' && i + 1 < text.length) {
        current += text[++i];
        inArg = true;
      } else if (/\s/.test(c)) {
        if (inArg) args.push(current);
        current = '';
        inArg = false;
      } else {
        current += c;
        inArg = true;
      }
    }
    if (quote) throw new ApiError(0, 'invalid_command', `the command has an unclosed ${quote} quote`);
    if (inArg) args.push(current);
    return args;
  }

  function showKindFields() {
    const kind = $('create-kind').value;
    for (const candidate of ['postgres', 'nginx', 'docker']) {
      const fields = $(`fields-${candidate}`);
      fields.hidden = candidate !== kind;
      fields.disabled = candidate !== kind;
    }
  }

  function numberField(id) {
    const value = $(id).value.trim();
    return value === '' ? NaN : Number(value);
  }

  async function createInstance() {
    clearError();
    const kind = $('create-kind').value;
    let spec;
    if (kind === 'postgres') {
      spec = { kind, database: $('create-database').value.trim(), replicas: numberField('create-replicas') || 0 };
      if ($('create-ha').checked) spec.ha = true;
      if ($('create-synchronous').checked) spec.synchronous = true;
    } else if (kind === 'nginx') {
      const site = $('create-site').value;
      spec = site.trim() ? { kind, site_config: site } : { kind };
    } else {
      spec = { kind, image: $('create-image').value.trim() };
      const command = splitCommand($('create-command').value);
      if (command.length > 0) spec.command = command;
    }
    const body = {
      name: $('create-name').value.trim(),
      spec,
      resources: { memory_mib: numberField('create-memory'), millicpus: numberField('create-cpu') },
    };
    if (!Number.isInteger(body.resources.memory_mib) || !Number.isInteger(body.resources.millicpus)) {
      throw new ApiError(0, 'invalid', 'memory and CPU must be whole numbers');
    }
    const created = await request('POST', '/v1/instances', body);
    $('create-name').value = '';
    accepted(created);
    showMessage(`${created.instance.name} accepted; provisioning…`);
  }

  // A new instance the platform accepted (`created`, the answer to a create): listed, and its
  // credentials shown once.
  function accepted(created) {
    const instance = created.instance;
    // The socket may already have reported a later status for it.
    const known = instances.get(instance.id);
    if (known && known.status !== instance.status) instance.status = known.status;
    instances.set(instance.id, instance);
    renderInstance(instance);
    renderInstanceFilter();
    refreshQuota();
    if (created.credentials) {
      $('credentials-user').textContent = created.credentials.user;
      $('credentials-password').textContent = created.credentials.password;
      $('credentials').hidden = false;
    } else {
      $('credentials').hidden = true;
    }
  }

  // ---- cluster page ---------------------------------------------------------------------

  // The open cluster page: which instance, its polling timer, and the lag samples so far
  // (oldest first, each `{ at, observed, replicas: [{ name, state, lag_bytes, lag_seconds }] }`:
  // `at` this page's time, `observed` the platform's `observed_at`).
  // `generation` changes whenever the page opens or closes, so an answer for a page that is
  // gone is dropped.
  // `look` numbers the looks, so only the newest one schedules the next.
  const cluster = { id: null, timer: null, samples: [], generation: 0, look: 0, busy: false, catalog: null };

  function isCluster(instance) {
    return instance.spec && instance.spec.kind === 'postgres' && instance.spec.ha === true;
  }

  // `iaas-{id}-member-1` → `member-1`: the names the API's own answers use for members.
  function memberName(node, instanceId) {
    const prefix = `iaas-${instanceId}-`;
    return node.startsWith(prefix) ? node.slice(prefix.length) : node;
  }

  const BYTE_UNITS = ['KiB', 'MiB', 'GiB', 'TiB'];
  function formatBytes(bytes) {
    if (!(bytes >= 1024)) return `${Math.max(0, Math.round(bytes || 0))} B`;
    let value = bytes / 1024;
    let unit = 0;
    while (value >= 1024 && unit + 1 < BYTE_UNITS.length) {
      value /= 1024;
      unit += 1;
    }
    return `${value.toFixed(1)} ${BYTE_UNITS[unit]}`;
  }

  function formatLag(replica) {
    if (!replica) return '';
    const secs = typeof replica.lag_seconds === 'number' ? ` · ${replica.lag_seconds.toFixed(1)} s` : '';
    return `${formatBytes(replica.lag_bytes)}${secs}`;
  }

  // Keeps `sample` and drops what is older than the window before it.
  function addLagSample(samples, sample, windowMs) {
    samples.push(sample);
    const oldest = sample.at - windowMs;
    while (samples.length > 0 && samples[0].at < oldest) samples.shift();
    return samples;
  }

  // One series per replica, in name order: runs of consecutive points (a replica missing from
  // a sample, not streaming then, breaks its line).
  function lagSeries(samples) {
    const names = [...new Set(samples.flatMap((s) => s.replicas.map((r) => r.name)))].sort();
    return names.map((name) => {
      const runs = [];
      let run = null;
      for (const sample of samples) {
        const replica = sample.replicas.find((r) => r.name === name);
        if (!replica) {
          run = null;
          continue;
        }
        if (!run) {
          run = [];
          runs.push(run);
        }
        run.push({ at: sample.at, bytes: replica.lag_bytes });
      }
      return { name, runs };
    });
  }

  // The smallest of 1, 2, 5 × a power of ten (in KiB from 1 KiB up) at or above `max`.
  function lagScale(max) {
    let step = 1024;
    for (;;) {
      for (const factor of [1, 2, 5]) {
        if (step * factor >= max) return step * factor;
      }
      step *= 10;
    }
  }

  // The replication lag over the window ending `now`, as an SVG line chart: one line per
  // replica, the lag in bytes upwards, time to the right.
  function lagChart(samples, now, windowMs) {
    const series = lagSeries(samples);
    if (series.length === 0) {
      return element('p', { className: 'empty', text: samples.length === 0 ? 'Waiting for the first sample…' : 'No replica is streaming.' });
    }
    const width = 640;
    const height = 240;
    const left = 72;
    const right = 16;
    const top = 14;
    const bottom = 58;
    const plotWidth = width - left - right;
    const plotHeight = height - top - bottom;
    const max = lagScale(Math.max(0, ...series.flatMap((s) => s.runs.flat().map((p) => p.bytes))));
    const x = (at) => left + Math.max(0, Math.min(1, 1 - (now - at) / windowMs)) * plotWidth;
    const y = (bytes) => top + plotHeight - (Math.min(bytes, max) / max) * plotHeight;
    const latest = samples[samples.length - 1];
    const summary = series.map(({ name, runs }) => {
      const current = latest.replicas.find((r) => r.name === name);
      const peak = Math.max(...runs.flat().map((p) => p.bytes));
      return `${name} ${current ? formatBytes(current.lag_bytes) : 'not streaming'} now, at most ${formatBytes(peak)}`;
    }).join('; ');
    const minutes = Math.round(windowMs / 60000);
    const label = `Replication lag over the last ${minutes} minutes: ${summary}`;
    const chart = svg('svg', {
      viewBox: `0 0 ${width} ${height}`,
      width: '100%',
      role: 'img',
      'aria-label': label,
      class: 'line-chart',
    });
    chart.append(svg('title', {}, label));
    for (const fraction of [0, 0.5, 1]) {
      const lineY = y(max * fraction);
      chart.append(
        svg('line', { x1: left, x2: width - right, y1: lineY, y2: lineY, class: fraction === 0 ? 'axis' : 'grid' }),
        svg('text', { x: left - 8, y: lineY, 'text-anchor': 'end', 'dominant-baseline': 'middle', class: 'tick' }, formatBytes(max * fraction)),
      );
    }
    for (const fraction of [0, 0.5, 1]) {
      const ago = Math.round(minutes * (1 - fraction));
      chart.append(svg('text', {
        x: left + fraction * plotWidth,
        y: top + plotHeight + 18,
        'text-anchor': fraction === 0 ? 'start' : fraction === 1 ? 'end' : 'middle',
        class: 'tick',
      }, ago === 0 ? 'now' : `${ago} min ago`));
    }
    series.forEach(({ name, runs }, index) => {
      const colour = SERIES_COLOURS[index % SERIES_COLOURS.length];
      const group = svg('g', { class: 'series', 'data-replica': name });
      group.append(svg('title', {}, `${name}: replication lag`));
      for (const run of runs) {
        const points = run.map((p) => `${x(p.at).toFixed(1)},${y(p.bytes).toFixed(1)}`).join(' ');
        group.append(svg('polyline', { points, fill: 'none', stroke: colour, 'stroke-width': 2, 'stroke-linejoin': 'round' }));
        const last = run[run.length - 1];
        group.append(svg('circle', { cx: x(last.at).toFixed(1), cy: y(last.bytes).toFixed(1), r: 3, fill: colour }));
      }
      const legendX = left + index * 130;
      const legendY = height - 12;
      group.append(
        svg('rect', { x: legendX, y: legendY - 9, width: 14, height: 4, rx: 2, fill: colour }),
        svg('text', { x: legendX + 20, y: legendY - 7, 'dominant-baseline': 'middle', class: 'legend' }, name),
      );
      chart.append(group);
    });
    return chart;
  }

  function clusterInstance() {
    return cluster.id ? instances.get(cluster.id) : undefined;
  }

  async function openCluster(id) {
    const instance = instances.get(id);
    if (!instance) return;
    closeCluster();
    clearError();
    cluster.id = id;
    cluster.generation += 1;
    $('cluster-name').textContent = instance.name;
    $('cluster-mode').textContent = instance.spec.synchronous ? 'synchronous replication' : 'asynchronous replication';
    $('scale-replicas').value = String(instance.spec.replicas);
    $('members').tBodies[0].replaceChildren();
    $('backups').tBodies[0].replaceChildren();
    $('backups-note').textContent = '';
    $('cluster-status').textContent = '';
    $('lag-chart').replaceChildren(lagChart([], Date.now(), LAG_WINDOW_MS));
    $('cluster-view').hidden = false;
    $('cluster-view').scrollIntoView({ block: 'nearest' });
    const generation = cluster.generation;
    await Promise.all([pollCluster(generation), loadBackups(generation)]);
  }

  function closeCluster() {
    clearTimeout(cluster.timer);
    cluster.timer = null;
    cluster.id = null;
    cluster.samples = [];
    cluster.catalog = null;
    cluster.generation += 1;
    $('cluster-view').hidden = true;
  }

  // One look at the open cluster: its members (info) and its replication, then the next look
  // in LAG_POLL_MS. A failed look is said on the page, not in the alert, and the next one
  // comes anyway: an election under way answers 503 for a few seconds.
  async function pollCluster(generation) {
    if (generation !== cluster.generation) return;
    clearTimeout(cluster.timer);
    cluster.look += 1;
    const look = cluster.look;
    const id = cluster.id;
    const base = `/v1/instances/${encodeURIComponent(id)}`;
    const [info, replication] = await Promise.allSettled([
      request('GET', `${base}/info`),
      request('GET', `${base}/replication`),
    ]);
    // Closed, another cluster opened, or a newer look (after a switchover) took over.
    if (generation !== cluster.generation || look !== cluster.look) return;
    const problems = [info, replication].filter((r) => r.status === 'rejected').map((r) => r.reason.message);
    if (replication.status === 'fulfilled') {
      // The platform serves the view from its cache for a few seconds: the same observation
      // again is no new sample. The time is this page's (the platform's clock may differ).
      const observed = replication.value.observed_at;
      const last = cluster.samples[cluster.samples.length - 1];
      if (!last || last.observed !== observed) {
        addLagSample(cluster.samples, { at: Date.now(), observed, replicas: replication.value.replicas || [] }, LAG_WINDOW_MS);
      }
    }
    renderMembers(info.status === 'fulfilled' ? info.value : null, replication.status === 'fulfilled' ? replication.value : null);
    $('lag-chart').replaceChildren(lagChart(cluster.samples, Date.now(), LAG_WINDOW_MS));
    $('cluster-status').textContent = problems.length > 0
      ? `Last look at ${formatTime(new Date().toISOString())}: ${problems.join('; ')}`
      : `Last look at ${formatTime(new Date().toISOString())}`;
    cluster.timer = setTimeout(() => { pollCluster(generation).catch((error) => showError(error)); }, LAG_POLL_MS);
  }

  function renderMembers(info, replication) {
    if (!info) return;
    const id = cluster.id;
    const replicas = new Map(((replication && replication.replicas) || []).map((r) => [r.name, r]));
    const rowsOut = [];
    const targets = [element('option', { text: 'The least-lagging replica', attrs: { value: '' } })];
    for (const node of info.nodes) {
      const name = memberName(node.name, id);
      const replica = replicas.get(name);
      const row = element('tr', { attrs: { 'data-member': name } });
      const role = element('td');
      role.append(element('span', { className: `role role-${node.role}`, text: node.role }));
      let state = node.running ? 'running' : 'down';
      if (node.role === 'replica' && node.running) state = replica ? replica.state : 'not streaming';
      row.append(
        element('th', { text: name, attrs: { scope: 'row' } }),
        role,
        element('td', { text: state }),
        element('td', { className: 'lag', text: node.role === 'replica' ? formatLag(replica) : '' }),
      );
      rowsOut.push(row);
      if (node.role === 'replica' && node.running) targets.push(element('option', { text: name, attrs: { value: name } }));
    }
    $('members').tBodies[0].replaceChildren(...rowsOut);
    const select = $('switchover-target');
    const chosen = select.value;
    select.replaceChildren(...targets);
    select.value = targets.some((t) => t.value === chosen) ? chosen : '';
  }

  async function loadBackups(generation) {
    const id = cluster.id;
    let catalog;
    try {
      catalog = await request('GET', `/v1/instances/${encodeURIComponent(id)}/backups`);
    } catch (error) {
      if (generation !== cluster.generation) return;
      // Unknown backups: a restore is left to the platform to check.
      cluster.catalog = null;
      $('backups-note').textContent = `Backups unavailable: ${error.message}`;
      return;
    }
    if (generation !== cluster.generation) return;
    cluster.catalog = catalog;
    const body = $('backups').tBodies[0];
    body.replaceChildren(...catalog.backups.slice().reverse().map((backup) => {
      const row = element('tr', { attrs: { 'data-label': backup.label } });
      row.append(
        element('td', { className: 'label', text: backup.label }),
        element('td', { text: backup.kind }),
        element('td', { className: 'time', text: formatTime(backup.started_at) }),
        element('td', { className: 'time', text: formatTime(backup.stopped_at) }),
        element('td', { text: formatBytes(backup.database_bytes) }),
        element('td', { text: formatBytes(backup.repository_bytes) }),
      );
      return row;
    }));
    $('backups-empty').hidden = catalog.backups.length > 0;
    const first = catalog.backups[0];
    const restorable = first
      ? `Restorable to any time after ${formatTime(first.stopped_at)}.${catalog.wal_max ? ` WAL archived up to segment ${catalog.wal_max}.` : ''}`
      : '';
    const schedule = (clusterInstance() || { spec: {} }).spec.backup_schedule;
    const scheduled = schedule
      ? `A full backup every ${schedule.every_hours} h; ${schedule.keep} kept.`
      : 'No scheduled backups (iaasctl instances backup-schedule sets them).';
    $('backups-note').textContent = `${restorable} ${scheduled}`.trim();
  }

  // The cluster's buttons: one request at a time.
  async function clusterAction(task) {
    if (cluster.busy) return;
    cluster.busy = true;
    for (const id of CLUSTER_BUTTONS) $(id).disabled = true;
    try {
      await task();
    } finally {
      cluster.busy = false;
      for (const id of CLUSTER_BUTTONS) $(id).disabled = false;
    }
  }

  // Why no backup of `catalog` reaches `time` (the latest the archive holds when null), or
  // null when one does: the platform would accept the restore, and the copy would end failed.
  // pgBackRest records whole seconds, so the second a backup ended in does not count.
  function unreachable(catalog, time) {
    const first = catalog.backups[0];
    if (!first) return 'yet: it has no backups (take one first)';
    if (!time) return null;
    if (time.getTime() > Date.now()) return `to ${formatTime(time.toISOString())}: that is in the future`;
    const second = (iso) => Math.floor(Date.parse(iso) / 1000);
    const reached = catalog.backups.some((b) => Math.floor(time.getTime() / 1000) > second(b.stopped_at));
    if (reached) return null;
    const earliest = new Date((second(first.stopped_at) + 1) * 1000).toISOString();
    return `to ${formatTime(time.toISOString())}: its first backup ended later; the earliest time is ${formatTime(earliest)}`;
  }

  // A copy of the cluster as it was at the chosen time (the latest the archive holds when no
  // time is given), made as a new cluster of the same shape; the cluster itself keeps running.
  function restore() {
    return clusterAction(async () => {
      const instance = clusterInstance();
      if (!instance) return;
      const name = $('restore-name').value.trim();
      if (!name) {
        showError(new Error('Name the new cluster the copy is made into.'));
        return;
      }
      // A time typed only in part reads as empty, which would mean the latest: refused.
      if ($('restore-time').validity.badInput) {
        showError(new Error('The time is not complete: give date and time, or clear the field for the latest.'));
        return;
      }
      const at = $('restore-time').value;
      const restoreSpec = { from: instance.id };
      const time = at ? new Date(at) : null;
      if (time && Number.isNaN(time.getTime())) {
        showError(new Error(`"${at}" is no time.`));
        return;
      }
      if (time) restoreSpec.target_time = time.toISOString();
      // The backups as they are now (a schedule may have taken or expired some since).
      await loadBackups(cluster.generation);
      const refused = cluster.catalog && unreachable(cluster.catalog, time);
      if (refused) {
        showError(new Error(`${instance.name} cannot be restored ${refused}.`));
        return;
      }
      const { database, replicas, synchronous } = instance.spec;
      const spec = { kind: 'postgres', database, replicas, ha: true, restore: restoreSpec };
      if (synchronous) spec.synchronous = true;
      clearError();
      const when = restoreSpec.target_time ? `as it was at ${formatTime(restoreSpec.target_time)}` : 'as its archive ends';
      showMessage(`Restoring ${instance.name} ${when} into ${name}…`);
      const created = await request('POST', '/v1/instances', { name, spec, resources: instance.resources });
      accepted(created);
      $('restore-name').value = '';
      showMessage(`${name} accepted: a copy of ${instance.name} ${when}, restoring…`);
    });
  }

  function takeBackup() {
    return clusterAction(async () => {
      const instance = clusterInstance();
      if (!instance) return;
      clearError();
      const generation = cluster.generation;
      showMessage(`Taking a backup of ${instance.name}…`);
      const taken = await request('POST', `/v1/instances/${encodeURIComponent(instance.id)}/backups`, { type: 'full' });
      showMessage(`Backup ${taken.backup.label} of ${instance.name} taken (${formatBytes(taken.backup.database_bytes)}).`);
      await loadBackups(generation);
    });
  }

  function switchover() {
    return clusterAction(async () => {
      const instance = clusterInstance();
      if (!instance) return;
      const target = $('switchover-target').value;
      const to = target || 'the least-lagging replica';
      if (!window.confirm(`Hand the primary role of ${instance.name} to ${to}? Clients of the read-write endpoint see a short pause.`)) return;
      clearError();
      showMessage(`Switching ${instance.name} over…`);
      const done = await request('POST', `/v1/instances/${encodeURIComponent(instance.id)}/switchover`, target ? { target } : {});
      const secs = (done.took_ms / 1000).toFixed(1);
      showMessage(`${instance.name}: ${done.new_primary} is the primary now (was ${done.old_primary || 'unknown'}; took ${secs} s).`);
      // Look again now rather than at the next tick: the roles have changed.
      await pollCluster(cluster.generation);
    });
  }

  // A new replica count: stored at once, met by the platform's supervisor within seconds
  // (the members table follows at the next look).
  function scale() {
    return clusterAction(async () => {
      const instance = clusterInstance();
      if (!instance) return;
      const replicas = Number($('scale-replicas').value);
      if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) {
        showError(new Error('Replicas must be a whole number from 1 to 5.'));
        return;
      }
      if (replicas === instance.spec.replicas) {
        showMessage(`${instance.name} already keeps ${replicas} replica${replicas === 1 ? '' : 's'}.`);
        return;
      }
      const fewer = replicas < instance.spec.replicas;
      if (fewer && !window.confirm(`Remove ${instance.spec.replicas - replicas} replica(s) of ${instance.name} with their data?`)) return;
      clearError();
      const changed = await request('PATCH', `/v1/instances/${encodeURIComponent(instance.id)}`, { replicas });
      instances.set(changed.id, changed);
      showMessage(`${instance.name}: ${replicas} replica${replicas === 1 ? '' : 's'} asked; the members follow within seconds.`);
      await pollCluster(cluster.generation);
    });
  }

  // ---- sessions -------------------------------------------------------------------------

  // The login this page's access token belongs to (its `sid` claim), to mark it in the list.
  function currentSessionId() {
    try {
      const payload = session.access.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(payload)).sid || null;
    } catch (_) {
      return null;
    }
  }

  async function loadSessions() {
    const { sessions } = await request('GET', '/v1/auth/sessions');
    const current = currentSessionId();
    const body = $('sessions').tBodies[0];
    body.replaceChildren();
    for (const item of sessions) {
      const mine = item.family === current;
      const from = mine ? `${item.client} (this browser)` : item.client;
      const row = element('tr');
      row.append(
        element('td', { text: from }),
        element('td', { text: formatTime(item.family_created_at) }),
        element('td', { text: formatTime(item.created_at) }),
        element('td', { text: formatTime(item.expires_at) }),
      );
      const cell = element('td', { className: 'row-actions' });
      const button = element('button', {
        className: 'button small secondary',
        text: 'End',
        attrs: { type: 'button', 'aria-label': `End the session from ${from}` },
      });
      button.addEventListener('click', () => {
        button.disabled = true;
        endSession(item.family, mine).catch((error) => {
          button.disabled = false;
          showError(error);
        });
      });
      cell.append(button);
      row.append(cell);
      body.append(row);
    }
  }

  async function endSession(id, mine) {
    await request('DELETE', `/v1/auth/sessions/${encodeURIComponent(id)}`);
    if (mine) {
      signedOut();
      showMessage('This session ended. Sign in again to continue.');
      return;
    }
    showMessage('The session ended; its devices are signed out.');
    await loadSessions();
  }

  // ---- live status ----------------------------------------------------------------------

  function setLive(state) {
    const pill = $('live');
    const labels = { on: 'Live', connecting: 'Connecting…', off: 'Offline' };
    pill.textContent = labels[state];
    pill.className = `pill pill-${state}`;
  }

  async function connectLive() {
    if (!session.access) return;
    // The token is checked once, at the upgrade: make sure it is not about to expire.
    if (session.accessExpiresAt - Date.now() < REFRESH_MARGIN_SECS * 1000) {
      try {
        await refreshTokens();
      } catch (error) {
        showError(error);
        return;
      }
    }
    setLive('connecting');
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${scheme}//${window.location.host}/v1/ws?access_token=${encodeURIComponent(session.access)}`;
    const socket = new WebSocket(url);
    session.socket = socket;
    socket.addEventListener('open', () => {
      session.reconnectDelay = RECONNECT_MIN_MS;
      setLive('on');
    });
    socket.addEventListener('message', (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      onFrame(frame);
    });
    socket.addEventListener('close', (event) => {
      if (session.socket !== socket) return;
      session.socket = null;
      if (!session.access) return;
      if (event.code === 4003) {
        // The login ended elsewhere (signed out everywhere, the password changed, ended from
        // another device): nothing to reconnect with.
        signedOut();
        showError(new ApiError(401, 'session_ended', 'your session ended; sign in again'));
        return;
      }
      // 4001: the access token expired; connectLive refreshes it before reconnecting.
      if (event.code === 4001) session.accessExpiresAt = 0;
      setLive('connecting');
      clearTimeout(session.reconnectTimer);
      session.reconnectTimer = setTimeout(connectLive, session.reconnectDelay);
      session.reconnectDelay = Math.min(session.reconnectDelay * 2, RECONNECT_MAX_MS);
    });
  }

  function onFrame(frame) {
    if (frame.type === 'snapshot') {
      let unknown = false;
      for (const instance of frame.instances) {
        if (!setStatus(instance.id, instance.status)) unknown = true;
      }
      if (unknown) loadInstances().catch((error) => showError(error));
    } else if (frame.type === 'status') {
      if (!setStatus(frame.instance_id, frame.status)) {
        loadInstances().catch((error) => showError(error));
        return;
      }
      if (frame.status === 'deleted') {
        renderInstanceFilter();
        // A deleted instance no longer counts against the quota (a deleting one still does).
        refreshQuota();
      }
      showMessage(`${instances.get(frame.instance_id).name} is ${frame.status}.`);
    } else if (frame.type === 'error') {
      showError(new ApiError(0, 'live_status', frame.message));
    }
    // `lagged` needs nothing: a fresh snapshot follows it.
  }

  // ---- events ---------------------------------------------------------------------------

  function toLocalInput(date) {
    const pad = (n) => String(n).padStart(2, '0');
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
  }

  function setDefaultRange() {
    const now = new Date();
    $('filter-from').value = toLocalInput(new Date(now.getTime() - 24 * 3600 * 1000));
    $('filter-to').value = '';
  }

  // A datetime-local value (the browser's time zone) as RFC 3339 UTC; empty stays empty.
  function rfc3339(id) {
    const value = $(id).value;
    if (!value) return '';
    const date = new Date(value);
    if (Number.isNaN(date.getTime())) throw new ApiError(0, 'invalid_query', `${id.replace('filter-', '')}: not a date`);
    return date.toISOString();
  }

  function eventFilters() {
    const params = new URLSearchParams();
    const add = (name, value) => { if (value) params.set(name, value); };
    add('instance', $('filter-instance').value);
    add('type', $('filter-type').value);
    add('action', $('filter-action').value);
    add('from', rfc3339('filter-from'));
    add('to', rfc3339('filter-to'));
    add('q', $('filter-text').value.trim());
    return params;
  }

  async function searchEvents() {
    clearError();
    const params = eventFilters();
    eventsCursor = null;
    $('events').tBodies[0].replaceChildren();
    await Promise.all([loadEvents(params), drawChart(params)]);
  }

  async function loadEvents(params) {
    const query = new URLSearchParams(params);
    query.set('limit', String(EVENTS_PAGE_SIZE));
    if (eventsCursor) query.set('cursor', eventsCursor);
    const page = await request('GET', `/v1/events?${query}`);
    const body = $('events').tBodies[0];
    for (const entry of page.entries) body.append(eventRow(entry));
    eventsCursor = page.next_cursor || null;
    $('more-events').hidden = !eventsCursor;
    $('events-empty').hidden = body.rows.length > 0;
  }

  function eventRow(entry) {
    const instance = instances.get(entry.instance_id);
    const row = element('tr', { attrs: { 'data-event-id': entry.event_id } });
    row.append(
      element('td', { className: 'time', text: formatTime(entry.timestamp) }),
      element('td', { text: instance ? instance.name : entry.instance_id.slice(0, 8) }),
      element('td', { className: 'event-name', text: entry.message }),
    );
    const level = element('td');
    level.append(element('span', { className: `level level-${entry.level}`, text: entry.level }));
    row.append(level);
    const details = element('td', { className: 'details' });
    for (const [key, value] of Object.entries(entry.metadata || {})) {
      // Container ids read like Docker's own short form; the whole value stays in the tooltip.
      const shown = key === 'container_id' && value.length > SHORT_ID_LEN ? value.slice(0, SHORT_ID_LEN) : value;
      const chip = element('span', { className: 'meta', attrs: { title: `${key}=${value}` } });
      chip.append(element('span', { className: 'meta-key', text: `${key}=` }), document.createTextNode(shown));
      details.append(chip, document.createTextNode(' '));
    }
    row.append(details);
    return row;
  }

  async function drawChart(params) {
    const to = params.get('to') ? new Date(params.get('to')) : new Date();
    const from = params.get('from') ? new Date(params.get('from')) : new Date(to.getTime() - 24 * 3600 * 1000);
    const spanSecs = Math.max(1, Math.ceil((to.getTime() - from.getTime()) / 1000));
    const bucket = Math.max(60, Math.ceil(spanSecs / STATS_BUCKETS));
    const query = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), bucket: String(bucket) });
    const stats = await request('GET', `/v1/events/stats?${query}`);
    const totals = new Map();
    for (const b of stats.buckets) {
      for (const [action, count] of Object.entries(b.by_action)) {
        totals.set(action, (totals.get(action) || 0) + count);
      }
    }
    const end = params.get('to') ? formatTime(to.toISOString()) : 'now';
    $('chart-range').textContent = `${formatTime(from.toISOString())} – ${end}`;
    $('chart').replaceChildren(barChart([...totals.entries()].sort((a, b) => b[1] - a[1])));
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Horizontal bars, one per action, drawn as inline SVG.
  function barChart(data) {
    if (data.length === 0) return element('p', { className: 'empty', text: 'No events in this time range.' });
    const rowHeight = 30;
    const labelWidth = 100;
    const countWidth = 40;
    const width = 310;
    const height = data.length * rowHeight + 8;
    const max = Math.max(...data.map(([, count]) => count));
    const summary = data.map(([action, count]) => `${action} ${count}`).join(', ');
    const chart = svg('svg', {
      viewBox: `0 0 ${width} ${height}`,
      width: '100%',
      role: 'img',
      'aria-label': `Events per action: ${summary}`,
      class: 'bar-chart',
    });
    chart.append(svg('title', {}, `Events per action: ${summary}`));
    data.forEach(([action, count], index) => {
      const y = index * rowHeight + 4;
      const barMax = width - labelWidth - countWidth;
      const barWidth = Math.max(2, Math.round((count / max) * barMax));
      const group = svg('g', { class: 'bar', 'data-action': action });
      group.append(
        svg('title', {}, `${action}: ${count}`),
        svg('text', { x: labelWidth - 10, y: y + rowHeight / 2, 'text-anchor': 'end', 'dominant-baseline': 'middle', class: 'bar-label' }, action),
        svg('rect', { x: labelWidth, y: y + 4, width: barMax, height: rowHeight - 10, rx: 4, class: 'bar-track' }),
        svg('rect', { x: labelWidth, y: y + 4, width: barWidth, height: rowHeight - 10, rx: 4, fill: ACTION_COLOURS[action] || '#6366f1' }),
        svg('text', { x: labelWidth + barWidth + 8, y: y + rowHeight / 2, 'dominant-baseline': 'middle', class: 'bar-count' }, String(count)),
      );
      chart.append(group);
    });
    return chart;
  }

  // ---- wiring ---------------------------------------------------------------------------

  // Runs `task` for a form or button, keeping the control disabled meanwhile.
  function guarded(control, task) {
    return async (event) => {
      if (event) event.preventDefault();
      control.disabled = true;
      try {
        await task();
      } catch (error) {
        showError(error);
      } finally {
        control.disabled = false;
      }
    };
  }

  function start() {
    $('auth-form').addEventListener('submit', guarded($('sign-in'), signIn));
    $('register').addEventListener('click', guarded($('register'), register));
    $('sign-out').addEventListener('click', guarded($('sign-out'), signOut));
    $('error-close').addEventListener('click', clearError);
    $('create-kind').addEventListener('change', showKindFields);
    $('create-form').addEventListener('submit', guarded($('create'), createInstance));
    $('events-form').addEventListener('submit', guarded($('search'), searchEvents));
    $('more-events').addEventListener('click', guarded($('more-events'), () => loadEvents(eventFilters())));
    $('take-backup').addEventListener('click', () => { takeBackup().catch((error) => showError(error)); });
    $('restore-form').addEventListener('submit', (event) => {
      event.preventDefault();
      restore().catch((error) => showError(error));
    });
    $('switchover').addEventListener('click', () => { switchover().catch((error) => showError(error)); });
    $('scale').addEventListener('click', () => { scale().catch((error) => showError(error)); });
    $('cluster-close').addEventListener('click', closeCluster);
    showKindFields();
    updateInstancesSummary();
    setLive('off');
  }

  start();
})();

// The dashboard, used in headless Chromium as a person would: sign-in errors, register, sign
// in, a token refresh before expiry, a refused create, a docker instance created and seen
// `running` and then `stopped` through the live WebSocket, an event search with filters and its
// chart, the delete, sign out; then, signed in again, the page of a highly available PostgreSQL
// cluster: its members and roles, the replication lag chart growing with each poll, a refused
// and a taken backup, a switchover to a chosen replica, a restore to a chosen time. Any
// console error or uncaught exception of the page fails it.
//
// The cluster's answers are stand-ins (Playwright routes) shaped like the provisioning API's:
// a real highly available cluster needs several PostgreSQL containers and half a minute, and
// the API behind them is tested in Rust (iaas-platform/tests/managed_postgres.rs). Every other
// request reaches the real platform.
//
// Run by scripts/browser-test.sh, which starts the platform. Environment:
//   IAAS_DASHBOARD_URL       the platform's base URL (required)
//   IAAS_SCREENSHOT_DIR      where screenshots go (required)
//   IAAS_BROWSER_IMAGE       image of the docker instance (default iaas-local/busybox:1)
//   IAAS_BROWSER_OWNER_FILE  where to write the new user's id, so the caller can clean up
//   CHROMIUM_PATH            the browser (default /usr/bin/chromium)
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = required('IAAS_DASHBOARD_URL').replace(/\/$/, '');
const SHOT_DIR = required('IAAS_SCREENSHOT_DIR');
const IMAGE = process.env.IAAS_BROWSER_IMAGE || 'iaas-local/busybox:1';
const OWNER_FILE = process.env.IAAS_BROWSER_OWNER_FILE;
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
// Container start and stop go through the Docker engine and its event stream.
const STATUS_TIMEOUT_MS = 60_000;
const UI_TIMEOUT_MS = 15_000;
const USERNAME = 'ada';
const PASSWORD = 'correct horse battery staple';
// The command keeps the container up until it is stopped, and exits 0 on SIGTERM.
const COMMAND = `sh -c "trap 'exit 0' TERM; sleep 3600 & wait"`;
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set; run scripts/browser-test.sh`);
    process.exit(2);
  }
  return value;
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// Polls `probe` until it returns a truthy value or `timeoutMs` passes; the last failure is
// reported.
async function eventually(what, timeoutMs, probe) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
      last = 'not yet';
    } catch (error) {
      last = error.message;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms (${last})`);
    await new Promise((resolve) => { setTimeout(resolve, 250); });
  }
}

let stepNumber = 0;
async function step(name, body) {
  stepNumber += 1;
  const started = Date.now();
  await body();
  console.log(`ok ${stepNumber} - ${name} (${Date.now() - started} ms)`);
}

const profile = await mkdtemp(path.join(tmpdir(), 'iaas-chromium-'));
await mkdir(SHOT_DIR, { recursive: true });
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: FLAGS,
  viewport: { width: 1440, height: 1000 },
  timeout: 30_000,
});
context.setDefaultTimeout(UI_TIMEOUT_MS);
const page = context.pages()[0] || await context.newPage();

// What the page says and does, for the verdict and for the failure report.
const consoleLog = [];
const consoleErrors = [];
let expectHttpErrors = false;
page.on('console', (message) => {
  const text = `${message.type()}: ${message.text()}`;
  consoleLog.push(text);
  if (message.type() !== 'error') return;
  // Chromium logs each 4xx answer to fetch(); the steps that provoke one allow it.
  if (expectHttpErrors && /status of 4\d\d/.test(message.text())) return;
  consoleErrors.push(text);
});
page.on('pageerror', (error) => consoleErrors.push(`uncaught: ${error.message}`));
const frames = [];
page.on('websocket', (socket) => {
  socket.on('framereceived', ({ payload }) => {
    try {
      frames.push(JSON.parse(String(payload)));
    } catch (_) {
      frames.push({ unparsable: String(payload) });
    }
  });
});
// Every instance as HTTP answers showed it after the create, to prove statuses came live.
const httpStatuses = [];
const bearers = [];
page.on('request', (request) => {
  const auth = request.headers().authorization;
  if (auth) bearers.push(auth);
});
page.on('response', async (response) => {
  const url = new URL(response.url());
  if (response.request().method() !== 'GET' || !url.pathname.startsWith('/v1/instances')) return;
  try {
    httpStatuses.push(await response.text());
  } catch (_) {
    // The page navigated away; nothing to record.
  }
});

// A highly available cluster `ledger` (1 primary, 2 replicas, synchronous) that exists only in
// the browser: added to the real instance list, and its cluster routes answered here as the
// provisioning API answers them. member-1's lag moves with each look, member-2's stays 0.
function standInCluster(owner) {
  const id = '0190a0a0-0000-7000-8000-00000000c1a5';
  const now = new Date().toISOString();
  const instance = {
    id,
    name: 'ledger',
    owner: owner || '0190a0a0-0000-7000-8000-000000000000',
    spec: { kind: 'postgres', database: 'ledger', replicas: 2, ha: true, synchronous: true },
    resources: { millicpus: 500, memory_mib: 256 },
    status: 'running',
    version: 1,
    created_at: now,
    updated_at: now,
  };
  const state = {
    primary: 'member-0',
    backups: [],
    refuseBackup: true,
    polls: { info: 0, replication: 0 },
    backupBodies: [],
    switchoverBodies: [],
    restoreBodies: [],
  };
  const members = ['member-0', 'member-1', 'member-2'];
  const json = (route, status, body) => route.fulfill({ status, contentType: 'application/json', body: JSON.stringify(body) });
  const refusal = (message) => ({ error: { code: 'refused', message } });
  async function answer(route) {
    const request = route.request();
    const view = new URL(request.url()).pathname.split('/').pop();
    const method = request.method();
    if (view === 'info' && method === 'GET') {
      state.polls.info += 1;
      const nodes = members.map((m) => ({ name: `iaas-${id}-${m}`, container_id: null, role: m === state.primary ? 'primary' : 'replica', running: true }));
      nodes.push({ name: `iaas-${id}-endpoint`, container_id: null, role: 'endpoint', running: true });
      nodes.push({ name: `iaas-${id}-store`, container_id: null, role: 'store', running: true });
      return json(route, 200, { instance_id: id, status: 'running', nodes, endpoints: [], observed_at: new Date().toISOString() });
    }
    if (view === 'replication' && method === 'GET') {
      state.polls.replication += 1;
      const replicas = members.filter((m) => m !== state.primary).map((name) => ({
        name,
        state: 'streaming',
        lag_bytes: name === 'member-1' ? (state.polls.replication * 7919) % 65536 : 0,
        lag_seconds: name === 'member-1' ? 0.02 : 0,
      }));
      // A new observation each time, as a cache entry that expired gives.
      const observed = new Date(Date.UTC(2026, 11, 7, 3, 0, 0) + state.polls.replication * 5000).toISOString();
      return json(route, 200, { instance_id: id, primary: `iaas-${id}-${state.primary}`, replicas, observed_at: observed });
    }
    if (view === 'backups' && method === 'GET') {
      return json(route, 200, { instance_id: id, backups: state.backups, wal_min: state.backups.length ? '000000010000000000000003' : null, wal_max: state.backups.length ? '000000010000000000000004' : null });
    }
    if (view === 'backups' && method === 'POST') {
      state.backupBodies.push(request.postDataJSON());
      if (state.refuseBackup) {
        state.refuseBackup = false;
        return json(route, 409, refusal(`instance ${id}: the cluster has no primary right now (an election is under way)`));
      }
      const backup = {
        label: '20261207-031500F',
        kind: 'full',
        started_at: '2026-12-07T03:15:00Z',
        stopped_at: '2026-12-07T03:15:07Z',
        database_bytes: 31562138,
        repository_bytes: 4194304,
        lsn_start: '0/3000028',
        lsn_stop: '0/3000100',
        checksum_errors: false,
      };
      state.backups.push(backup);
      return json(route, 201, { instance_id: id, backup });
    }
    if (view === 'switchover' && method === 'POST') {
      const body = request.postDataJSON();
      state.switchoverBodies.push(body);
      const old = state.primary;
      state.primary = body.target;
      return json(route, 200, { instance_id: id, action: 'switchover', old_primary: old, new_primary: body.target, timeline: 2, took_ms: 3810 });
    }
    return json(route, 404, { error: { code: 'not_found', message: `no stand-in for ${method} ${view}` } });
  }
  return {
    get polls() { return state.polls; },
    get backupBodies() { return state.backupBodies; },
    get switchoverBodies() { return state.switchoverBodies; },
    get restoreBodies() { return state.restoreBodies; },
    id,
    async install(target) {
      await target.route((url) => url.pathname === '/v1/instances', async (route) => {
        const request = route.request();
        // A restore of this cluster is answered as the API answers a create.
        if (request.method() === 'POST' && request.postDataJSON()?.spec?.restore?.from === id) {
          const body = request.postDataJSON();
          state.restoreBodies.push(body);
          const copy = { ...instance, id: '0190a0a0-0000-7000-8000-00000000c0b7', name: body.name, spec: body.spec, status: 'provisioning' };
          return json(route, 202, { instance: copy, credentials: { user: 'app', password: 'restored-pw-7a1c' } });
        }
        if (request.method() !== 'GET') return route.continue();
        const response = await route.fetch();
        const body = await response.json();
        body.instances.push(instance);
        return route.fulfill({ response, json: body });
      });
      await target.route((url) => url.pathname.startsWith(`/v1/instances/${id}/`), answer);
    },
  };
}

let failed = false;
try {
  // Fake timers so the test can jump to just before the access token expires.
  await context.clock.install();

  await step('the page loads with its sign-in form', async () => {
    const response = await page.goto(`${BASE}/`);
    check(response.ok(), `GET / answered ${response.status()}`);
    check(response.headers()['content-security-policy'], 'the page has no Content-Security-Policy');
    check((await page.title()) === 'iaas-rs dashboard', `title ${await page.title()}`);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await page.screenshot({ path: path.join(SHOT_DIR, 'dashboard-sign-in.png') });
  });

  await step('a wrong password is refused with the API message', async () => {
    expectHttpErrors = true;
    await page.getByLabel('Username', { exact: true }).fill(USERNAME);
    await page.getByLabel('Password', { exact: true }).fill('not the password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').getByText('invalid username or password').waitFor();
    expectHttpErrors = false;
  });

  let ownerId;
  await step('registers', async () => {
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    const registered = page.waitForResponse((r) => r.url().endsWith('/v1/auth/register'));
    await page.getByRole('button', { name: 'Create account' }).click();
    const response = await registered;
    check(response.status() === 201, `register answered ${response.status()}`);
    ownerId = (await response.json()).id;
    if (OWNER_FILE) await writeFile(OWNER_FILE, `${ownerId}\n`);
    await page.getByRole('status').getByText(`Account ${USERNAME} created`).waitFor();
  });

  let loginBearer;
  await step('signs in and the live connection opens', async () => {
    const login = page.waitForResponse((r) => r.url().endsWith('/v1/auth/login'));
    await page.getByRole('button', { name: 'Sign in' }).click();
    const response = await login;
    check(response.status() === 200, `login answered ${response.status()}`);
    loginBearer = `Bearer ${(await response.json()).access_token}`;
    await page.getByRole('heading', { name: 'Instances' }).waitFor();
    await page.getByRole('status').filter({ hasText: /^Live$/ }).waitFor();
    // Its one login, marked as this browser's, with a way to end it.
    const sessions = page.getByRole('table', { name: 'Sessions' });
    await sessions.getByRole('row').filter({ hasText: '(this browser)' }).waitFor();
    check((await sessions.getByRole('row').count()) === 2, 'one session row under the header');
    check(await page.getByRole('button', { name: /^End the session from .*\(this browser\)$/ }).isEnabled(),
      'the session cannot be ended');
    check(await page.getByText(`Signed in as ${USERNAME}`).isVisible(), 'the user is not shown');
  });

  await step('refreshes the access token before it expires', async () => {
    const refreshed = page.waitForResponse((r) => r.url().endsWith('/v1/auth/refresh'));
    // The token lives 15 minutes; the page refreshes a minute before.
    await context.clock.fastForward('14:30');
    const response = await refreshed;
    check(response.status() === 200, `refresh answered ${response.status()}`);
    bearers.length = 0;
  });

  await step('a bad instance name is refused with the API message', async () => {
    expectHttpErrors = true;
    await page.getByLabel('Name', { exact: true }).fill('Bad_Name');
    await page.getByLabel('Kind', { exact: true }).selectOption('docker');
    await page.getByLabel('Image', { exact: true }).fill(IMAGE);
    await page.getByLabel('Command (optional)').fill(COMMAND);
    await page.getByRole('button', { name: 'Create instance' }).click();
    await page.getByRole('alert').getByText('must start with a lowercase letter').waitFor();
    expectHttpErrors = false;
    check(bearers.length > 0 && bearers.every((b) => b !== loginBearer),
      'calls after the refresh must use the new access token');
  });

  let instanceId;
  const row = page.getByRole('table', { name: 'Instances' }).getByRole('row', { name: /worker/ });
  await step('creates a docker instance and sees it running, pushed over the WebSocket', async () => {
    await page.getByLabel('Name', { exact: true }).fill('worker');
    httpStatuses.length = 0;
    const created = page.waitForResponse((r) => r.url().endsWith('/v1/instances') && r.request().method() === 'POST');
    await page.getByRole('button', { name: 'Create instance' }).click();
    const response = await created;
    check(response.status() === 202, `create answered ${response.status()}: ${await response.text()}`);
    instanceId = (await response.json()).instance.id;
    await row.waitFor();
    await row.getByText('running', { exact: true }).waitFor({ timeout: STATUS_TIMEOUT_MS });
    check(frames.some((f) => f.type === 'status' && f.instance_id === instanceId && f.status === 'running'),
      'no WebSocket frame reported it running');
    check(!httpStatuses.some((body) => body.includes(instanceId) && body.includes('"running"')),
      'an HTTP answer, not the WebSocket, reported it running');
    check(await page.getByRole('button', { name: 'Stop worker' }).isEnabled(), 'Stop is disabled');
    check(await page.getByRole('button', { name: 'Start worker' }).isDisabled(), 'Start is enabled');
    await page.getByText(/^Quota: 1 of \d+ instances/).waitFor();
    await page.screenshot({ path: path.join(SHOT_DIR, 'dashboard-running.png') });
  });

  await step('stops it and sees it stopped, pushed over the WebSocket', async () => {
    httpStatuses.length = 0;
    await page.getByRole('button', { name: 'Stop worker' }).click();
    await row.getByText('stopped', { exact: true }).waitFor({ timeout: STATUS_TIMEOUT_MS });
    check(frames.some((f) => f.type === 'status' && f.instance_id === instanceId && f.status === 'stopped'),
      'no WebSocket frame reported it stopped');
    check(!httpStatuses.some((body) => body.includes(instanceId) && body.includes('"stopped"')),
      'an HTTP answer, not the WebSocket, reported it stopped');
    await page.getByRole('button', { name: 'Start worker' }).waitFor();
    check(await page.getByRole('button', { name: 'Start worker' }).isEnabled(), 'Start is disabled');
  });

  const events = page.getByRole('table', { name: 'Events' });
  await step('searches its events and sees them with the per-action chart', async () => {
    await page.getByLabel('Instance', { exact: true }).selectOption({ label: 'worker' });
    // The monitoring index is fed asynchronously; search again until it has caught up.
    await eventually('created, started and stopped events and their chart', 30_000, async () => {
      await page.getByRole('button', { name: 'Search' }).click();
      await page.getByRole('button', { name: 'Search' }).isEnabled();
      const texts = await events.getByRole('row').allInnerTexts();
      const chart = await page.getByRole('img', { name: /^Events per action/ }).getAttribute('aria-label', { timeout: 2000 });
      return ['docker created', 'docker started', 'docker stopped'].every((e) => texts.some((t) => t.includes(e)))
        && /created 1/.test(chart) && /started 1/.test(chart) && /stopped 1/.test(chart);
    });
    const bars = await page.locator('svg.bar-chart g.bar').count();
    check(bars >= 3, `the chart has ${bars} bars`);
  });

  await step('filters events by action', async () => {
    await page.getByLabel('Action', { exact: true }).selectOption('stopped');
    await page.getByRole('button', { name: 'Search' }).click();
    await eventually('only stopped events', UI_TIMEOUT_MS, async () => {
      const texts = (await events.getByRole('row').allInnerTexts()).slice(1);
      return texts.length > 0 && texts.every((t) => t.includes('docker stopped'));
    });
    await page.getByLabel('Action', { exact: true }).selectOption('');
    await page.getByLabel('Text', { exact: true }).fill('worker');
    await page.getByRole('button', { name: 'Search' }).click();
    await eventually('the created event, found by its metadata text', UI_TIMEOUT_MS, async () => {
      const texts = (await events.getByRole('row').allInnerTexts()).slice(1);
      return texts.length > 0 && texts.some((t) => t.includes('docker created') && t.includes('name=worker'));
    });
    await page.getByLabel('Text', { exact: true }).fill('');
    await page.getByRole('button', { name: 'Search' }).click();
    await events.getByRole('row').filter({ hasText: 'docker started' }).first().waitFor();
    await page.screenshot({ path: path.join(SHOT_DIR, 'dashboard.png'), fullPage: true });
  });

  await step('deletes it', async () => {
    page.once('dialog', (dialog) => dialog.accept());
    const deleted = page.waitForResponse((r) => r.request().method() === 'DELETE');
    await page.getByRole('button', { name: 'Delete worker' }).click();
    const response = await deleted;
    check(response.status() === 202, `delete answered ${response.status()}: ${await response.text()}`);
    await row.waitFor({ state: 'detached' });
    await page.getByText('No instances yet').waitFor();
    await page.getByText(/^Quota: 0 of \d+ instances/).waitFor();
  });

  await step('signs out', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  });

  const cluster = standInCluster(ownerId);
  await step('a highly available cluster has a page: members, roles and the replication lag as a chart', async () => {
    await cluster.install(page);
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Instances' }).waitFor();
    await page.getByRole('button', { name: 'Cluster ledger' }).click();
    await page.getByRole('heading', { name: 'Cluster ledger' }).waitFor();
    const members = page.getByRole('table', { name: 'Members' });
    await members.getByRole('row', { name: /member-0 primary/ }).waitFor();
    await members.getByRole('row', { name: /member-1 replica streaming/ }).waitFor();
    check(await members.getByRole('row').count() === 6, 'three members, the endpoint and the store');
    // Each poll adds a point to each replica's line; the page polls every 5 s of its clock.
    await eventually('five samples on each replica line', 30_000, async () => {
      const lines = await page.locator('svg.line-chart g.series polyline').evaluateAll(
        (nodes) => nodes.map((n) => n.getAttribute('points').split(' ').length),
      );
      if (lines.length === 2 && lines.every((points) => points >= 5)) return true;
      await context.clock.runFor(5_000);
      return false;
    });
    const chart = await page.getByRole('img', { name: /^Replication lag over the last 10 minutes/ }).getAttribute('aria-label');
    check(/member-1 [\d.]+ (B|KiB) now, at most/.test(chart) && /member-2 0 B now/.test(chart), `chart label: ${chart}`);
    check(cluster.polls.replication >= 5, `replication was asked ${cluster.polls.replication} times`);
    await page.locator('#cluster-view').screenshot({ path: path.join(SHOT_DIR, 'dashboard-cluster.png') });
  });

  await step('takes a backup from the cluster page; a refusal shows the platform\'s message', async () => {
    const backups = page.getByRole('table', { name: 'Backups' });
    await page.getByText('No backups yet.').waitFor();
    expectHttpErrors = true;
    await page.getByRole('button', { name: 'Take backup' }).click();
    await page.getByRole('alert').getByText('an election is under way').waitFor();
    expectHttpErrors = false;
    await page.getByRole('button', { name: 'Take backup' }).click();
    await backups.getByRole('row', { name: /20261207-031500F full/ }).waitFor();
    await page.getByText(/^Restorable to any time after /).waitFor();
    check(cluster.backupBodies.every((body) => body.type === 'full'), `bodies ${JSON.stringify(cluster.backupBodies)}`);
  });

  await step('switches over to a chosen replica and shows the new roles', async () => {
    await page.getByLabel('Switchover to').selectOption('member-2');
    page.once('dialog', (dialog) => dialog.accept());
    await page.getByRole('button', { name: 'Switch over' }).click();
    const members = page.getByRole('table', { name: 'Members' });
    await members.getByRole('row', { name: /member-2 primary/ }).waitFor();
    await members.getByRole('row', { name: /member-0 replica/ }).waitFor();
    await page.getByRole('status').getByText('member-2 is the primary now (was member-0').waitFor();
    check(JSON.stringify(cluster.switchoverBodies) === '[{"target":"member-2"}]',
      `switchover bodies ${JSON.stringify(cluster.switchoverBodies)}`);
  });

  await step('restores a copy of the cluster as it was at a chosen time; a time no backup reaches is refused', async () => {
    // The field takes the browser's local time (Playwright fills it to the minute): these are
    // UTC moments written in it.
    const local = (iso) => page.evaluate((utc) => {
      const d = new Date(utc);
      const two = (n) => String(n).padStart(2, '0');
      return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}T${two(d.getHours())}:${two(d.getMinutes())}`;
    }, iso);
    await page.getByLabel('Restore into a new cluster named').fill('ledger-copy');
    // The only backup ended at 03:15:07: a time before it is refused before anything is asked.
    await page.getByLabel(/^As it was at/).fill(await local('2026-12-07T03:10:00Z'));
    await page.getByRole('button', { name: 'Restore', exact: true }).click();
    await page.getByRole('alert').getByText('its first backup ended later').waitFor();
    check(cluster.restoreBodies.length === 0, 'a refused restore was sent');
    await page.getByLabel(/^As it was at/).fill(await local('2026-12-07T03:20:00Z'));
    await page.getByRole('button', { name: 'Restore', exact: true }).click();
    await page.getByRole('status').getByText('ledger-copy accepted: a copy of ledger as it was at').waitFor();
    await page.getByRole('region', { name: 'New credentials' }).getByText('restored-pw-7a1c').waitFor();
    const at = '2026-12-07T03:20:00.000Z';
    const [body] = cluster.restoreBodies;
    const spec = body && body.spec;
    check(cluster.restoreBodies.length === 1 && body.name === 'ledger-copy'
      && spec.kind === 'postgres' && spec.database === 'ledger' && spec.replicas === 2
      && spec.ha === true && spec.synchronous === true
      && spec.restore.from === cluster.id && spec.restore.target_time === at,
    `restore bodies ${JSON.stringify(cluster.restoreBodies)}`);
  });

  await step('closes the cluster page and signs out', async () => {
    await page.getByRole('button', { name: 'Close the cluster page' }).click();
    await page.getByRole('heading', { name: 'Cluster ledger' }).waitFor({ state: 'hidden' });
    const asked = cluster.polls.replication;
    await context.clock.runFor(20_000);
    check(cluster.polls.replication === asked, 'a closed page still polls');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  });

  check(consoleErrors.length === 0, `the page logged errors:\n  ${consoleErrors.join('\n  ')}`);
  console.log(`dashboard browser test passed; screenshots in ${SHOT_DIR}`);
} catch (error) {
  failed = true;
  console.error(`not ok - ${error.message}`);
  console.error(`console errors of the page (${consoleErrors.length}):`);
  for (const line of consoleErrors) console.error(`  ${line}`);
  console.error('everything the page logged:');
  for (const line of consoleLog) console.error(`  ${line}`);
  console.error(`WebSocket frames received: ${JSON.stringify(frames)}`);
  try {
    await page.screenshot({ path: path.join(SHOT_DIR, 'dashboard-failure.png'), fullPage: true });
    console.error(`screenshot of the failure: ${path.join(SHOT_DIR, 'dashboard-failure.png')}`);
  } catch (shotError) {
    console.error(`no failure screenshot: ${shotError.message}`);
  }
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);

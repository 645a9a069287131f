#!/usr/bin/env node
// End-to-end test of the web console against a real daemon, in Debian's Chromium through
// playwright-core (no browser download). A Rust integration test starts the daemon (with
// a telemetry replay trace and the SmolLM2 model) and runs this script; it can also be run
// by hand against any daemon that serves the built console at `/`.
//
// Environment:
//   OASIS_URL           the daemon, e.g. http://127.0.0.1:8091 (serves the console at `/`)
//   OASIS_PAIRING_CODE  the daemon's one-time pairing code
//   OASIS_IMPORT_PATH   a GGUF file on the box to import
//   OASIS_CHAT_MODEL    a served model for the chat request made with the new key
//   OASIS_SCREENSHOTS   folder for the PNGs [default: e2e/out]
//   CHROMIUM_PATH       [default: /usr/bin/chromium]
//   OASIS_E2E_TIMEOUT_MS  per wait [default: 30000]
//   OASIS_TLS_FINGERPRINT over HTTPS, the fingerprint the daemon printed: the Connect
//                       screen must show it after pairing [default: any SHA-256 shape]
//
// Prints one line per step; exits 0 only if every step passed. On failure it prints the
// step, the error and the browser's console errors, and saves `failure.png`.

import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const run = promisify(execFile);

function env(name, fallback) {
  const v = process.env[name];
  if (v !== undefined && v !== '') return v;
  if (fallback !== undefined) return fallback;
  console.error(`console.e2e: ${name} must be set`);
  process.exit(2);
}

const BASE = env('OASIS_URL').replace(/\/+$/, '');
const CODE = env('OASIS_PAIRING_CODE');
const IMPORT_PATH = env('OASIS_IMPORT_PATH');
const CHAT_MODEL = env('OASIS_CHAT_MODEL');
const SHOTS = resolve(env('OASIS_SCREENSHOTS', 'e2e/out'));
const CHROMIUM = env('CHROMIUM_PATH', '/usr/bin/chromium');
const T = Number(env('OASIS_E2E_TIMEOUT_MS', '30000'));
const TLS_FINGERPRINT = process.env.OASIS_TLS_FINGERPRINT ?? '';
const HTTPS = BASE.startsWith('https:');

mkdirSync(SHOTS, { recursive: true });
const stamp = Date.now().toString(36);
const importName = `e2e-import-${stamp}`;
const servedName = `e2e-served-${stamp}`;
const keyName = `e2e-key-${stamp}`;

const consoleErrors = [];
let page;
let context;
let passed = 0;
let failedStep = false;

/** Runs one step; on failure reports it and rethrows (ending the run). */
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failedStep = true;
    console.log(`FAIL ${name} (${Date.now() - t0} ms)`);
    console.log(`     ${String(e?.stack ?? e).split('\n').join('\n     ')}`);
    if (consoleErrors.length > 0) {
      console.log('     browser console errors:');
      for (const m of consoleErrors.slice(-20)) console.log(`       ${m}`);
    }
    if (page) {
      try {
        await page.screenshot({ path: join(SHOTS, 'failure.png'), fullPage: true });
        console.log(`     screenshot: ${join(SHOTS, 'failure.png')}`);
      } catch (se) {
        console.log(`     (no screenshot: ${se})`);
      }
    }
    throw e;
  }
}

const tid = (id) => `[data-testid="${id}"]`;

async function shot(name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function go(route) {
  await page.click(tid(`nav-${route}`));
  await page.waitForSelector(tid(`screen-${route}`), { timeout: T });
}

/** Waits until `f()` (run in Node) returns a truthy value, polling. */
async function until(what, f, timeout = T) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? `: ${last}` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** POSTs JSON with curl and returns [status, body]. */
async function curl(path, token, body) {
  const { stdout } = await run(
    'curl',
    [
      '-sS', '--max-time', '120', '-w', '\n%{http_code}',
      // A self-signed box: the console's own fingerprint check covers its identity.
      ...(HTTPS ? ['-k'] : []),
      '-H', `Authorization: Bearer ${token}`,
      '-H', 'Content-Type: application/json',
      ...(body === undefined ? [] : ['-d', JSON.stringify(body)]),
      `${BASE}${path}`,
    ],
    { maxBuffer: 1 << 20 },
  );
  const i = stdout.lastIndexOf('\n');
  return [Number(stdout.slice(i + 1)), stdout.slice(0, i)];
}

/** GETs an admin path from the page, with the token pairing left in session storage. */
async function apiGet(path) {
  return page.evaluate(async (p) => {
    const k = Object.keys(sessionStorage).find((x) => x.startsWith('oasis.token.'));
    const r = await fetch(p, { headers: k ? { Authorization: `Bearer ${sessionStorage.getItem(k)}` } : {} });
    return { status: r.status, body: await r.json() };
  }, path);
}

async function main() {
  console.log(`console.e2e: ${BASE}, screenshots in ${SHOTS}`);
  // Playwright gives the browser a fresh profile in a temporary folder of its own.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  try {
    context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, locale: 'en-US', ignoreHTTPSErrors: true });
    page = await context.newPage();
    page.setDefaultTimeout(T);
    page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
    page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));

    await step('open the console', async () => {
      await page.goto(`${BASE}/`, { waitUntil: 'domcontentloaded', timeout: T });
      await page.waitForSelector(tid('screen-connect'));
      await page.waitForSelector(tid('probe-result'));
      await shot('connect');
    });

    await step('pair with the code and land on Overview', async () => {
      await page.fill(tid('pair-code'), CODE);
      await page.fill(tid('pair-name'), `e2e ${stamp}`);
      await page.click(tid('pair-submit'));
      await page.waitForSelector(tid('screen-overview'));
      await until('2 GPUs with figures', async () => {
        const cards = await page.$$eval(tid('gpu-card'), (els) => els.map((e) => e.getAttribute('data-util')));
        return cards.length === 2 && cards.some((u) => u !== '' && Number(u) > 0);
      });
      await page.waitForSelector(`${tid('served-model')}[data-name="${CHAT_MODEL}"]`);
      await page.waitForSelector(`${tid('engine-row')}[data-model="${CHAT_MODEL}"]`);
      await shot('overview');
    });

    if (HTTPS) {
      await step('Connect: the certificate fingerprint from the pairing answer is listed', async () => {
        await go('connect');
        const fp = ((await (await page.waitForSelector(tid('box-fingerprint'))).textContent()) ?? '').trim();
        if (!/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/i.test(fp)) throw new Error(`not a SHA-256 fingerprint: ${fp}`);
        if (TLS_FINGERPRINT && fp.toUpperCase() !== TLS_FINGERPRINT.toUpperCase()) {
          throw new Error(`the console lists ${fp}, the daemon printed ${TLS_FINGERPRINT}`);
        }
        await shot('connect-paired');
      });
    }

    await step('GPUs: the live chart moves', async () => {
      await go('gpus');
      const chart = tid('live-chart-0');
      await page.waitForSelector(`${chart}[data-points]`);
      const first = await page.getAttribute(chart, 'data-last-ts');
      await until('a newer sample on the chart', async () => {
        const now = await page.getAttribute(chart, 'data-last-ts');
        return Number(now) > Number(first) && Number(await page.getAttribute(chart, 'data-points')) >= 2;
      });
      await page.waitForSelector(`${tid('feed-state')}`);
    });

    await step('GPUs: alerts from the trace are shown', async () => {
      await page.waitForSelector(`${tid('alert-row')}[data-rule="xid_critical"]`);
      // GPU 0's thermal excursion: the temperature alert (or throttling, on a slower sampler).
      await page.waitForSelector(`${tid('alert-row')}[data-rule="gpu_temperature"], ${tid('alert-row')}[data-rule="throttling"]`);
      const text = await page.textContent(tid('gpu-alerts'));
      if (!/XID 79/.test(text ?? '')) throw new Error(`no "XID 79" in the alert list: ${text}`);
      await shot('gpus');
    });

    await step('GPUs: silence the thermal alert for 1 h, then lift the silence', async () => {
      const thermal = (await page.$(`${tid('alert-row')}[data-rule="gpu_temperature"]`))
        ?? (await page.$(`${tid('alert-row')}[data-rule="throttling"]`));
      if (!thermal) throw new Error('no thermal alert');
      const key = await thermal.getAttribute('data-key');
      const row = `${tid('alert-row')}[data-key="${key}"]`;
      if ((await page.getAttribute(row, 'data-silenced')) !== 'false') throw new Error(`${key} is silenced already`);
      const asked = Date.now();
      await page.click(`${row} ${tid('alert-silence-1h')}`);
      // The row changes once the daemon answers: the badge and the unsilence button.
      await page.waitForSelector(`${row}[data-silenced="true"] ${tid('alert-silenced')}`);
      await page.waitForSelector(`${row} ${tid('alert-unsilence')}`);
      const badge = (await page.textContent(`${row} ${tid('alert-silenced')}`)) ?? '';
      if (!/^silenced until .+ by .+/.test(badge)) throw new Error(`the badge reads: ${badge}`);
      const a = await apiGet('/admin/v1/alerts');
      const got = a.body.alerts?.find((x) => x.key === key);
      const until = got?.silenced_until_ms ?? 0;
      if (a.status !== 200 || Math.abs(until - (asked + 3_600_000)) > 120_000) {
        throw new Error(`the daemon has ${key} silenced until ${until} (asked at ${asked}): ${JSON.stringify(got)}`);
      }
      if (got.state === 'firing' && !(a.body.silenced >= 1)) throw new Error(`"silenced" reads ${a.body.silenced}`);
      await page.locator(tid('gpu-alerts')).scrollIntoViewIfNeeded();
      await shot('gpus-silenced');

      await page.click(`${row} ${tid('alert-unsilence')}`);
      await page.waitForSelector(`${row}[data-silenced="false"] ${tid('alert-silence-1h')}`);
      if (await page.$(`${row} ${tid('alert-silenced')}`)) throw new Error('the silenced badge stayed');
      const b = await apiGet('/admin/v1/alerts');
      const after = b.body.alerts?.find((x) => x.key === key);
      if (after?.silenced_until_ms != null) throw new Error(`the daemon still has ${key} silenced: ${JSON.stringify(after)}`);
    });

    await step('Models: import with a live progress bar', async () => {
      await go('models');
      await page.fill(tid('import-path'), IMPORT_PATH);
      await page.fill(tid('import-name'), importName);
      await page.click(tid('import-submit'));
      const job = `[data-testid^="job-"][data-model="${importName}"]`;
      await page.waitForSelector(`${job} ${tid('job-progress')}`);
      await shot('models-importing');
      await page.waitForSelector(`${job}[data-state="ready"] ${tid('job-progress')}[data-pct="100"]`);
      await page.waitForSelector(tid(`model-row-${importName}`));
    });

    await step('Models: the fit estimate of the imported model before deploying it', async () => {
      const fit = tid(`fit-${importName}`);
      await page.waitForSelector(`${tid(`model-row-${importName}`)}[data-deployed="false"]`);
      const verdict = await until('a fit estimate', async () => {
        const v = await page.getAttribute(fit, 'data-fits');
        if (v === 'unknown') throw new Error(`no estimate: ${await page.textContent(fit)}`);
        return v === 'true' || v === 'false' ? v : null;
      });
      const text = (await page.textContent(fit)) ?? '';
      if (!/GPUs? ·/.test(text)) throw new Error(`the estimate reads: ${text}`);
      console.log(`     ${importName}: fits=${verdict}: ${text}`);
      await page.locator(tid('catalog')).scrollIntoViewIfNeeded();
      await shot('models-fit');
    });

    await step('Models: deploy it and see its fit estimate', async () => {
      await page.fill(tid(`deploy-name-${importName}`), servedName);
      await page.click(tid(`deploy-${importName}`));
      await page.waitForSelector(`${tid(`deployment-row-${servedName}`)}[data-state="ready"]`, { timeout: 2 * T });
      await page.waitForSelector(`${tid(`model-row-${importName}`)}[data-deployed="true"]`);
      await page.waitForSelector(`${tid(`fit-${importName}`)}[data-fits="true"], ${tid(`fit-${importName}`)}[data-fits="false"]`);
      await shot('models');
    });

    let keyId = '';
    let token = '';
    await step('Keys: create a key with a daily token quota; the token is shown once', async () => {
      await go('keys');
      await page.fill(tid('key-name'), keyName);
      await page.fill(tid('key-tpd'), '100000');
      await page.click(tid('key-create'));
      token = (await (await page.waitForSelector(tid('new-key-token'))).textContent())?.trim() ?? '';
      if (!token.startsWith('oasis-')) throw new Error(`unexpected token ${token}`);
      const row = await page.waitForSelector(`[data-testid^="key-row-"][data-name="${keyName}"]`);
      keyId = ((await row.getAttribute('data-testid')) ?? '').replace('key-row-', '');
      const limits = await row.textContent();
      if (!/100,000/.test(limits ?? '')) throw new Error(`the quota is not listed: ${limits}`);
      await shot('keys-created');
    });

    await step('curl with the new key: 200', async () => {
      const [status, body] = await curl('/v1/chat/completions', token, {
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'Say hello.' }],
        max_tokens: 8,
      });
      if (status !== 200) throw new Error(`chat completion answered ${status}: ${body}`);
      // Give the MoE model some load too, for the Experts screen (token ids: it has no tokenizer).
      const [ms, models] = await curl('/v1/models', token);
      if (ms !== 200) throw new Error(`/v1/models answered ${ms}: ${models}`);
      const moe = JSON.parse(models).data.find((m) => /moe/i.test(m.architecture ?? ''));
      if (moe) {
        const [s2, b2] = await curl('/v1/completions', token, { model: moe.id, prompt: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], max_tokens: 8 });
        if (s2 !== 200) throw new Error(`MoE completion answered ${s2}: ${b2}`);
      }
    });

    await step("Usage shows the key's tokens", async () => {
      await page.click(tid('usage-group-key'));
      const row = `${tid('usage-row')}[data-group="${keyId}"]`;
      await until('usage for the new key', async () => {
        const el = await page.$(row);
        if (!el) {
          // The usage view polls every 10 s; switching groups reloads it now.
          await page.click(tid('usage-group-day'));
          await page.click(tid('usage-group-key'));
          return false;
        }
        return Number(await el.getAttribute('data-total')) > 0;
      });
      await page.locator(tid('usage')).scrollIntoViewIfNeeded();
      await shot('usage');
    });

    await step('revoke the key: curl gets 401', async () => {
      await page.click(tid(`revoke-${keyId}`));
      await page.click(tid(`revoke-${keyId}-confirm`));
      await page.waitForSelector(`${tid(`key-row-${keyId}`)}[data-status="revoked"]`);
      const [status, body] = await curl('/v1/chat/completions', token, {
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'Say hello.' }],
        max_tokens: 8,
      });
      if (status !== 401) throw new Error(`a revoked key got ${status}: ${body}`);
    });

    await step('Experts: heatmap of the MoE layers and a rebalance', async () => {
      await go('experts');
      const map = await page.waitForSelector(`${tid('heatmap')}[data-layers]`);
      const layers = Number(await map.getAttribute('data-layers'));
      if (!(layers >= 1)) throw new Error(`heatmap with ${layers} layers`);
      const rows = await page.$$(tid('heat-layer'));
      if (rows.length < layers) throw new Error(`${rows.length} heatmap rows for ${layers} layers`);
      await page.click(tid('rebalance'));
      await page.waitForSelector(tid('rebalance-result'));
      await shot('experts');
    });

    await step('Hardware profile: pass / warn / fail rows', async () => {
      await go('profile');
      await page.waitForSelector(tid('check-row'));
      const verdicts = await page.$$eval(tid('check-row'), (els) => els.map((e) => e.getAttribute('data-verdict')));
      if (!verdicts.includes('pass')) throw new Error(`no passing check: ${verdicts}`);
      if (!verdicts.every((v) => ['pass', 'warn', 'fail'].includes(v ?? ''))) throw new Error(`odd verdicts: ${verdicts}`);
      await shot('profile');
    });

    await step('Audit log: key, rebalance and silence entries, and "chain verified"', async () => {
      await go('audit');
      await page.waitForSelector(`${tid('chain-status')}[data-ok="true"]`);
      const status = await page.textContent(tid('chain-status'));
      if (!/chain verified/i.test(status ?? '')) throw new Error(`chain status reads: ${status}`);
      await page.waitForSelector(`${tid('audit-row')}[data-action="key.create"]`);
      await page.waitForSelector(`${tid('audit-row')}[data-action="key.revoke"]`);
      await page.waitForSelector(`${tid('audit-row')}[data-action="engine.rebalance"]`);
      await page.waitForSelector(`${tid('audit-row')}[data-action="alert.silence"]`);
      await page.waitForSelector(`${tid('audit-row')}[data-action="alert.unsilence"]`);
      await page.fill(tid('audit-filter-action'), 'key.create');
      await until('the filter to apply', async () => {
        const actions = await page.$$eval(tid('audit-row'), (els) => els.map((e) => e.getAttribute('data-action')));
        return actions.length > 0 && actions.every((a) => a === 'key.create');
      });
      await page.fill(tid('audit-filter-action'), '');
      await shot('audit');
    });

    await step('switch to 中文: translated navigation and Overview', async () => {
      await page.click(tid('lang-zh'));
      await until('Chinese navigation', async () => (await page.textContent(tid('nav-overview'))) === '概览');
      await go('overview');
      await page.waitForSelector(tid('gpu-card'));
      const title = await page.textContent(`${tid('screen-overview')} h1`);
      if (title?.trim() !== '概览') throw new Error(`Overview title reads ${title}`);
      await page.waitForSelector(`${tid('served-model')}[data-name="${CHAT_MODEL}"]`);
      await shot('overview-zh');
    });

    await step('no page errors and no CSP violations', async () => {
      const bad = consoleErrors.filter((m) => /Content Security Policy|pageerror|Uncaught/i.test(m));
      if (bad.length > 0) throw new Error(`the page reported:\n${bad.join('\n')}`);
    });

    console.log(`console.e2e: all ${passed} steps passed`);
  } finally {
    await browser.close().catch(() => {});
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    if (!failedStep) console.log(`FAIL setup: ${e?.stack ?? e}`);
    process.exit(1);
  },
);

// Shared helpers of the linkgate k6 scripts (ramp.js, redirect_rate.js).
// Settings come from environment variables (k6 run -e NAME=value ...):
//
//   BASE_URL   the deployment to test, e.g. https://sho.rt (default http://localhost:8080)
//   API_KEY    optional; sent as "Authorization: Bearer ..." on API calls
//   CODES      optional comma-separated existing codes to redirect; when
//              empty, setup() creates SEED links first
//   SEED       links setup() creates when CODES is empty (default 100)
//   TARGET_URL prefix of the URLs the test creates (default https://example.com/k6)
import http from 'k6/http';
import { sleep } from 'k6';

export const BASE_URL = (__ENV.BASE_URL || 'http://localhost:8080').replace(/\/+$/, '');
export const TARGET_URL = __ENV.TARGET_URL || 'https://example.com/k6';

// Integer and float settings with defaults; a bad value stops the test.
export function envInt(name, def) {
  const v = __ENV[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name}=${v} is not a number`);
  return n;
}

export function apiHeaders() {
  const h = { 'Content-Type': 'application/json' };
  if (__ENV.API_KEY) h.Authorization = `Bearer ${__ENV.API_KEY}`;
  return h;
}

// createLink POSTs one link and returns the response. Statuses other than
// expected (default [201]) count in http_req_failed.
export function createLink(url, tags, expected = [201]) {
  return http.post(`${BASE_URL}/api/v1/links`, JSON.stringify({ url: url }), {
    headers: apiHeaders(),
    tags: tags,
    responseCallback: http.expectedStatuses(...expected),
    responseType: 'text', // the body is read even with discardResponseBodies
  });
}

// seedCodes returns the codes the test redirects to: CODES when given,
// otherwise SEED new links. A 429 (linkgate's create limit, 30/min per
// client by default) is waited out as its Retry-After says, so seeding
// succeeds against a deployment with shipped limits, slowly; raise
// LINKGATE_RATELIMIT_CREATE for the test or pass CODES to skip it. Those
// 429s are expected, so they do not count in http_req_failed (whose
// threshold would otherwise fail the run before it starts).
export function seedCodes() {
  if (__ENV.CODES) {
    const codes = __ENV.CODES.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (codes.length === 0) throw new Error('CODES holds no code');
    return codes;
  }
  const n = envInt('SEED', 100);
  const codes = [];
  const run = Date.now().toString(36);
  for (let i = 0; i < n; i++) {
    for (let attempt = 0; ; attempt++) {
      const res = createLink(`${TARGET_URL}/seed/${run}/${i}`, { kind: 'seed' }, [201, 429]);
      if (res.status === 201) {
        codes.push(res.json('code'));
        break;
      }
      if (res.status === 429 && attempt < 20) {
        sleep(Math.min(60, Number(res.headers['Retry-After'] || '1')));
        continue;
      }
      throw new Error(`seeding: POST /api/v1/links answered ${res.status}: ${res.body}`);
    }
  }
  return codes;
}

export function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

// k6 ramp test of a linkgate deployment, shaped like the original load
// tests: virtual users ramp to 2,500, 5,000 and 7,500, holding each level,
// each user looping over mixed traffic with think time:
//
//   80% GET /{code}               expect 302 (redirects are not followed)
//   10% POST /api/v1/links        expect 201 (the new code joins the user's list)
//   10% GET /api/v1/links/{code}  expect 200
//
//   k6 run -e BASE_URL=https://sho.rt loadtest/k6/ramp.js
//
// Settings (besides those of lib.js): RAMP (default 1m) and HOLD (default 2m)
// per level; SCALE multiplies the user counts (e.g. 0.01 for a smoke run);
// THINK_MIN/THINK_MAX seconds between a user's requests (default 0.5/1.5);
// thresholds P95_REDIRECT_MS (100), P99_REDIRECT_MS (250), P95_CREATE_MS
// (500), P95_READ_MS (250). The test fails when more than 1% of requests
// fail or a threshold is crossed.
//
// Every user comes from the machine running k6, so linkgate's per-client
// limits apply to all of them together: raise LINKGATE_RATELIMIT_REDIRECT,
// _CREATE and _API for the test (or run k6 from many machines), otherwise
// the 429s show up as failed requests (counted in "ratelimited").
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';
import { BASE_URL, TARGET_URL, apiHeaders, createLink, envInt, pick, seedCodes } from './lib.js';

const RAMP = __ENV.RAMP || '1m';
const HOLD = __ENV.HOLD || '2m';
const SCALE = envInt('SCALE', 1);
const vus = (n) => Math.max(1, Math.round(n * SCALE));
const THINK_MIN = envInt('THINK_MIN', 0.5);
const THINK_MAX = envInt('THINK_MAX', 1.5);

const ratelimited = new Counter('ratelimited');

export const options = {
  scenarios: {
    ramp: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: RAMP, target: vus(2500) },
        { duration: HOLD, target: vus(2500) },
        { duration: RAMP, target: vus(5000) },
        { duration: HOLD, target: vus(5000) },
        { duration: RAMP, target: vus(7500) },
        { duration: HOLD, target: vus(7500) },
        { duration: RAMP, target: 0 },
      ],
      gracefulRampDown: '10s',
    },
  },
  maxRedirects: 0,
  setupTimeout: '10m',
  discardResponseBodies: false,
  thresholds: {
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    'http_req_duration{kind:redirect}': [
      `p(95)<${envInt('P95_REDIRECT_MS', 100)}`,
      `p(99)<${envInt('P99_REDIRECT_MS', 250)}`,
    ],
    'http_req_duration{kind:create}': [`p(95)<${envInt('P95_CREATE_MS', 500)}`],
    'http_req_duration{kind:read}': [`p(95)<${envInt('P95_READ_MS', 250)}`],
  },
};

export function setup() {
  return { codes: seedCodes() };
}

// Codes this user created, redirected to as well.
const mine = [];

export default function (data) {
  const roll = Math.random();
  let res;
  if (roll < 0.8) {
    const code = mine.length > 0 && Math.random() < 0.2 ? pick(mine) : pick(data.codes);
    res = http.get(`${BASE_URL}/${code}`, {
      tags: { kind: 'redirect', name: 'GET /{code}' },
      responseCallback: http.expectedStatuses(301, 302, 307, 308),
    });
    check(res, { 'redirect: 3xx with Location': (r) => r.status >= 301 && r.status <= 308 && !!r.headers.Location });
  } else if (roll < 0.9) {
    res = createLink(`${TARGET_URL}/${__VU}/${__ITER}?t=${Date.now()}`, { kind: 'create', name: 'POST /api/v1/links' });
    const ok = check(res, { 'create: 201 with code': (r) => r.status === 201 && !!r.json('code') });
    if (ok && mine.length < 100) mine.push(res.json('code'));
  } else {
    const code = pick(data.codes);
    res = http.get(`${BASE_URL}/api/v1/links/${code}`, {
      headers: apiHeaders(),
      tags: { kind: 'read', name: 'GET /api/v1/links/{code}' },
      responseCallback: http.expectedStatuses(200),
    });
    check(res, { 'read: 200 with url': (r) => r.status === 200 && !!r.json('url') });
  }
  if (res.status === 429) ratelimited.add(1);
  sleep(THINK_MIN + Math.random() * (THINK_MAX - THINK_MIN));
}

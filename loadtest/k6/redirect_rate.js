// k6 constant-arrival-rate redirect test of a linkgate deployment: RATE
// GET /{code} per second for DURATION, whatever the latency (an open model:
// slow answers do not slow the arrivals, they pile up as VUs or as dropped
// iterations), over codes picked at random.
//
//   k6 run -e BASE_URL=https://sho.rt -e RATE=2000 loadtest/k6/redirect_rate.js
//
// Settings (besides those of lib.js): RATE (default 1000 per second),
// DURATION (default 2m), PRE_VUS (default 100) and MAX_VUS (default 2000);
// thresholds P95_MS (default 25), P99_MS (default 100). The test fails when
// more than 1% of requests fail, a latency threshold is crossed, or more
// than 1% of the planned iterations could not start (k6 ran out of VUs: the
// deployment could not keep up).
//
// The requests all come from one client address, so linkgate's redirect
// policy (LINKGATE_RATELIMIT_REDIRECT, 1200/1m:200 by default) must allow
// RATE per second, or the 429s count as failures (see "ratelimited").
import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import { BASE_URL, envInt, pick, seedCodes } from './lib.js';

const RATE = envInt('RATE', 1000);
const DURATION = __ENV.DURATION || '2m';

function seconds(d) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(d);
  if (!m) throw new Error(`DURATION=${d}: use e.g. 90s, 2m`);
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
}
const planned = RATE * seconds(DURATION);

const ratelimited = new Counter('ratelimited');

export const options = {
  scenarios: {
    redirects: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: envInt('PRE_VUS', 100),
      maxVUs: envInt('MAX_VUS', 2000),
    },
  },
  maxRedirects: 0,
  setupTimeout: '10m',
  discardResponseBodies: true,
  thresholds: {
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    http_req_duration: [`p(95)<${envInt('P95_MS', 25)}`, `p(99)<${envInt('P99_MS', 100)}`],
    dropped_iterations: [`count<${Math.max(1, Math.floor(planned * 0.01))}`],
  },
};

export function setup() {
  return { codes: seedCodes() };
}

export default function (data) {
  const res = http.get(`${BASE_URL}/${pick(data.codes)}`, {
    tags: { name: 'GET /{code}' },
    responseCallback: http.expectedStatuses(301, 302, 307, 308),
  });
  check(res, { '3xx with Location': (r) => r.status >= 301 && r.status <= 308 && !!r.headers.Location });
  if (res.status === 429) ratelimited.add(1);
}

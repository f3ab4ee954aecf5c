#!/usr/bin/env node
// deploy/loadtest/summary.js REPORT.json [NAME]: an Artillery JSON report
// (run.sh --output) as the table agenda-bench prints per phase (make
// bench-load), which is seed 003's "Resultados" table with p99 added; then
// errors by kind (seed 003's second table) and a row per step. README.md
// says what each column is and how it maps to the seed's.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const STEPS = ['login', 'week', 'create', 'read', 'rsvp'];
const EP = 'plugins.metrics-by-endpoint';

const [file, nameArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: summary.js REPORT.json [NAME]');
  process.exit(2);
}
const report = JSON.parse(fs.readFileSync(file, 'utf8'));
const agg = report.aggregate || {};
const counters = agg.counters || {};
const summaries = agg.summaries || {};
const name = nameArg || path.basename(file, '.json');

const count = (k) => counters[k] || 0;
const sumOf = (re) =>
  Object.keys(counters)
    .filter((k) => re.test(k))
    .reduce((n, k) => n + counters[k], 0);
const ms = (v) => (typeof v === 'number' ? v.toFixed(1) : '-');
const row = (cells) => `| ${cells.join(' | ')} |`;
const latency = (s) => (s ? [s.min, s.median, s.p95, s.p99, s.max].map(ms) : ['-', '-', '-', '-', '-']);

// The span the requests took: from the first period's start to the last
// one's end, as Artillery records them (10-second periods).
function seconds() {
  const periods = (report.intermediate || []).filter((p) => p.counters && p.counters['http.requests']);
  if (periods.length > 0) {
    const first = Math.min(...periods.map((p) => p.firstCounterAt || p.firstMetricAt));
    const last = Math.max(...periods.map((p) => p.lastCounterAt || p.lastMetricAt));
    if (last > first) return (last - first) / 1000;
  }
  if (agg.firstMetricAt && agg.lastMetricAt && agg.lastMetricAt > agg.firstMetricAt) {
    return (agg.lastMetricAt - agg.firstMetricAt) / 1000;
  }
  return null;
}

const vusers = count('vusers.created');
const planned = vusers * STEPS.length;
const sent = count('http.requests');
const ok = sumOf(/^http\.codes\.2\d\d$/);
const secs = seconds();
const rps = secs ? ok / secs : 0;
const pct = planned > 0 ? ((100 * ok) / planned).toFixed(1) : '0.0';

console.log(`== ${name}: ${vusers} virtual users arrived` + (secs !== null ? `; requests over ${secs.toFixed(1)} s` : ''));
console.log(row(['Test', 'Total requests', 'Completed (%)', 'RPS mean', 'Min', 'Median', 'p95', 'p99', 'Max (ms)']));
console.log(row(Array(9).fill('--')));
console.log(row([name, planned, `${ok} (${pct}%)`, rps.toFixed(2), ...latency(summaries['http.response_time.2xx'])]));

const errorKeys = Object.keys(counters)
  .filter((k) => k.startsWith('errors.'))
  .sort();
const errors = errorKeys.map((k) => `${k.slice('errors.'.length)}: ${counters[k]}`);
console.log(`errors: ${errors.length ? errors.join(', ') : 'none'}`);
const seedKinds = ['ECONNRESET', 'ETIMEDOUT', 'ESOCKETTIMEDOUT'];
console.log(row(['Test', ...seedKinds]));
console.log(row(['--', '--', '--', '--']));
console.log(row([name, ...seedKinds.map((e) => count(`errors.${e}`))]));
const codes = Object.keys(counters)
  .filter((k) => k.startsWith('http.codes.'))
  .sort()
  .map((k) => `${k.slice('http.codes.'.length)}: ${counters[k]}`);
console.log(`status codes: ${codes.length ? codes.join(', ') : 'none'}`);
if (planned > sent) {
  console.log(`not sent: ${planned - sent} requests (flows stopped at an earlier error)`);
}
console.log(
  `virtual users: ${vusers} created, ${count('vusers.completed')} completed every step, ${count('vusers.failed')} failed`
);

console.log(row(['step', 'sent', 'ok', 'errors', 'Min', 'Median', 'p95', 'p99', 'Max (ms)']));
console.log(row(Array(9).fill('--')));
for (const step of STEPS) {
  const esc = step.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  // The per-step plugin sees no answer that failed its expectation (the
  // expect plugin ends the VU first): those are counted from errors.*.
  const answered = sumOf(new RegExp(`^${EP}\\.${esc}\\.codes\\.\\d+$`));
  const good = sumOf(new RegExp(`^${EP}\\.${esc}\\.codes\\.2\\d\\d$`));
  const failed =
    answered - good + sumOf(new RegExp(`^${EP}\\.${esc}\\.errors\\.`)) + count(`errors.Failed expectations for request ${step}`);
  console.log(row([step, good + failed, good, failed, ...latency(summaries[`${EP}.response_time.${step}`])]));
}
console.log('(latencies of answers that passed their checks, to the first byte, as Artillery times them)');
const session = summaries['vusers.session_length'];
if (session) {
  console.log(`whole visit, think times included: median ${ms(session.median)} ms, p95 ${ms(session.p95)} ms`);
}

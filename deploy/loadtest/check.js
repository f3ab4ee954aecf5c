#!/usr/bin/env node
// deploy/loadtest/check.js agenda.yml ENV...: offline validation (run.sh
// --check), as Artillery has no dry run. For every environment it runs
// Artillery's own preparation of the script (environment merge, script
// validation, payload parsing) on a copy next to a two-line sample payload,
// then checks what Artillery does not: every {{ variable }} of the flow is
// given by the payload, the processor or an earlier capture; the processor
// loads and gives sane values; people.csv, when present, has the right
// columns. Prints the virtual users and requests each level makes.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const [script, ...envs] = process.argv.slice(2);
if (!script || envs.length === 0) {
  console.error('usage: check.js agenda.yml ENV...');
  process.exit(2);
}
const dir = path.dirname(path.resolve(script));
const artillery = path.join(dir, '.npm', 'node_modules', 'artillery');
const prepareTestExecutionPlan = require(
  path.join(artillery, 'lib', 'util', 'prepare-test-execution-plan.js')
);
global.artillery = global.artillery || { testRunId: 'check' };

const problems = [];
const problem = (m) => problems.push(m);

// A copy of the script and processor beside a sample payload.
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'agenda-loadtest-check-'));
fs.copyFileSync(path.resolve(script), path.join(tmp, 'agenda.yml'));
fs.copyFileSync(path.join(dir, 'agenda.js'), path.join(tmp, 'agenda.js'));
const sampleId = '01234567-89ab-cdef-0123-456789abcdef';
fs.writeFileSync(
  path.join(tmp, 'people.csv'),
  `username,password,attendee,invite\nlt0-0,Lt-secret-1,lt0-1,${sampleId}\nlt0-1,Lt-secret-1,lt0-0,${sampleId}\n`
);

/** Virtual users a phase list makes (Artillery ramps linearly, per second). */
function arrivals(phases) {
  let n = 0;
  for (const p of phases) {
    if (p.arrivalCount !== undefined) n += p.arrivalCount;
    else if (p.rampTo !== undefined) n += (p.duration * (p.arrivalRate + p.rampTo)) / 2;
    else n += p.duration * (p.arrivalRate || 0);
  }
  return Math.round(n);
}

/** The {{ name }} variables a value uses. */
function templateVars(value, out = new Set()) {
  if (typeof value === 'string') {
    for (const m of value.matchAll(/\{\{\s*([A-Za-z0-9_$.]+)\s*\}\}/g)) out.add(m[1]);
  } else if (value && typeof value === 'object') {
    for (const v of Object.values(value)) templateVars(v, out);
  }
  return out;
}

async function main() {
  const cwd = process.cwd();
  process.chdir(tmp);
  const rows = [];
  let prepared;
  for (const env of envs) {
    const plan = await prepareTestExecutionPlan(
      ['agenda.yml'],
      { environment: env, target: 'http://127.0.0.1:9' },
      {}
    );
    const phases = plan.config.phases || [];
    if (!plan.config.environments[env]) problem(`environment ${env} is not defined`);
    if (phases.length === 0) problem(`${env}: no phases`);
    for (const p of phases) {
      if (!(p.duration > 0) || !(p.arrivalRate >= 0)) problem(`${env}: a phase without duration/arrivalRate: ${JSON.stringify(p)}`);
    }
    const payload = plan.config.payload[0];
    if (!payload.data || payload.data.length !== 2 || payload.data[0].length !== payload.fields.length) {
      problem(`${env}: the sample payload did not parse into ${payload.fields.length} columns`);
    }
    const seconds = phases.reduce((s, p) => s + p.duration, 0);
    rows.push([env, phases.map((p) => `${p.duration}s ${p.arrivalRate}${p.rampTo !== undefined ? `->${p.rampTo}` : ''}/s`).join(', '), seconds, arrivals(phases)]);
    prepared = plan;
  }

  // Variables: payload fields, what the processor sets, captures so far.
  const processor = require(path.join(tmp, 'agenda.js'));
  const scenario = prepared.scenarios[0];
  const fn = scenario.beforeScenario;
  if (typeof processor[fn] !== 'function') problem(`beforeScenario ${fn} is not in agenda.js`);
  // A sample person of the sample payload, as Artillery sets it.
  const fields = prepared.config.payload[0].fields;
  const row = prepared.config.payload[0].data[0];
  const context = { vars: Object.fromEntries(fields.map((f, i) => [f, row[i]])) };
  await new Promise((resolve) => processor[fn](context, null, resolve));
  const v = context.vars;
  const rfc = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;
  for (const k of ['week_from', 'week_to', 'event_start', 'event_end']) {
    if (!rfc.test(v[k] || '')) problem(`processor: ${k} is not RFC 3339 UTC: ${v[k]}`);
  }
  const day = 86400 * 1000;
  const from = Date.parse(v.week_from);
  const windowEnd = processor.WINDOW + processor.WEEKS * 7 * day;
  if (Date.parse(v.week_to) - from !== 7 * day || new Date(from).getUTCDay() !== 1) problem('processor: the week is not Monday to Monday');
  if (!(from >= processor.WINDOW && from < windowEnd)) problem('processor: the week is not one of the window');
  if (Date.parse(v.event_end) - Date.parse(v.event_start) !== 30 * 60 * 1000) problem('processor: the event is not 30 minutes');
  if (!(Date.parse(v.event_start) >= processor.WINDOW && Date.parse(v.event_end) <= windowEnd)) problem('processor: the event is not in the window');
  if (v.attendee === v.username || !v.attendee) problem(`processor: attendee ${v.attendee} for ${v.username}`);
  if (!['accepted', 'tentative', 'declined'].includes(v.rsvp)) problem(`processor: rsvp ${v.rsvp}`);
  for (const k of ['think_after_login', 'think_after_week', 'think_after_create']) {
    if (!/^\d+ms$/.test(v[k] || '')) problem(`processor: ${k} is not a duration: ${v[k]}`);
  }
  const known = new Set(Object.keys(v));
  let requests = 0;
  for (const step of scenario.flow) {
    if (step.function) {
      // Run it on the sample VU, with what the captures would give.
      if (typeof processor[step.function] !== 'function') problem(`function ${step.function} is not in agenda.js`);
      else await new Promise((resolve) => processor[step.function](context, null, resolve));
      for (const k of Object.keys(context.vars)) known.add(k);
      continue;
    }
    const method = ['get', 'post', 'put', 'patch', 'delete'].find((m) => step[m]);
    const spec = method ? step[method] : step;
    for (const name of templateVars(method ? { ...spec, capture: undefined } : spec)) {
      if (!known.has(name)) problem(`step ${spec.name || JSON.stringify(step)} uses {{ ${name} }}, which nothing sets before it`);
    }
    if (method) {
      requests += 1;
      if (!spec.name) problem(`a ${method} step without a name (metrics and errors are per name)`);
      if (!(spec.expect || []).some((e) => e.statusCode !== undefined)) problem(`step ${spec.name}: no statusCode expectation`);
      for (const c of [].concat(spec.capture || [])) {
        known.add(c.as);
        context.vars[c.as] = `captured-${c.as}`;
      }
    }
  }

  // The real payload, when setup.sh has written it.
  process.chdir(cwd);
  const real = path.join(dir, 'people.csv');
  let people = 'not written yet (setup.sh)';
  if (fs.existsSync(real)) {
    const lines = fs.readFileSync(real, 'utf8').trim().split('\n');
    if (lines[0] !== prepared.config.payload[0].fields.join(',')) problem(`people.csv: header ${lines[0]}`);
    if (lines.length < 3) problem('people.csv: fewer than two people');
    const bad = lines.slice(1).filter((l) => l.split(',').length !== 4 || l.split(',').some((c) => c === ''));
    if (bad.length) problem(`people.csv: ${bad.length} lines without four values, e.g. ${bad[0]}`);
    people = `${lines.length - 1} people`;
  }
  fs.rmSync(tmp, { recursive: true, force: true });

  console.log(`agenda.yml: one scenario of ${requests} requests; people.csv: ${people}`);
  console.log('| environment | phases (arrivals per second) | seconds | virtual users | requests |');
  console.log('| -- | -- | -- | -- | -- |');
  for (const [env, phases, seconds, vus] of rows) console.log(`| ${env} | ${phases} | ${seconds} | ${vus} | ${vus * requests} |`);
  if (v.answer_event !== 'captured-event_id' && v.answer_event !== row[fields.indexOf('invite')]) {
    problem(`pick_invitation chose ${v.answer_event}`);
  }
  if (problems.length) {
    console.error(`\n${problems.length} problem(s):`);
    for (const p of problems) console.error(`  - ${p}`);
    process.exit(1);
  }
  console.log('\nok: every environment prepares and validates; the flow is consistent');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

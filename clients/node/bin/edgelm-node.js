#!/usr/bin/env node
/**
 * edgelm-node: the Node.js consumer of edgelm bundles on the command line. edgelm's Python
 * test suite calls it, so its interface stays as it is:
 *
 *   edgelm-node verify BUNDLE
 *       {"passed": bool, "vectors": [{name, kind, passed, detail}]}; exit 0 when all pass, 1 otherwise
 *   edgelm-node generate BUNDLE --ids-json '[[1,2,3],[4,5]]' [--max-new-tokens N]
 *       {"rows": [{"ids": [...], "finish": "eos"|"length"|"context"}]}, greedy, the rows as one batch
 *   edgelm-node generate BUNDLE --prompt TEXT [--chat] [--max-new-tokens N]
 *                        [--temperature T --top-k K --top-p P --seed S] [--stream]
 *       {"text": ..., "ids": [...], "finish": ...}; with --stream the text pieces first, then
 *       the JSON on the last line
 *   edgelm-node embed BUNDLE --texts-json '["a","b"]' [--prompt NAME]
 *       {"vectors": [[...], ...]}; NAME one of the manifest's prompts (left out: its default_prompt)
 *   edgelm-node rerank BUNDLE --query TEXT --documents-json '["a","b"]' [--top-n N]
 *       {"results": [{"index": i, "score": s}, ...]}, best first (a one-label text-classification bundle)
 *
 * Generated ids are those edgelm's Python Generator returns (get_new_tokens): an eos id that
 * ended a row is the last one, and finish says "eos". A bundle that cannot be used, or a bad
 * argument, exits 2 with one line "error: ..." on stderr.
 */

import { parseArgs } from 'node:util';

import { load, verify, BundleError, GenerationError } from '../src/index.js';

const USAGE = 'usage: edgelm-node verify BUNDLE | generate BUNDLE (--ids-json JSON | --prompt TEXT [--chat] [--stream]) '
  + '[--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S] | embed BUNDLE --texts-json JSON [--prompt NAME] '
  + '| rerank BUNDLE --query TEXT --documents-json JSON [--top-n N]';

/** A bad command line: exit 2 like a bad bundle, with the usage line. */
class UsageError extends Error {}

const OPTIONS = {
  'ids-json': { type: 'string' },
  prompt: { type: 'string' },
  chat: { type: 'boolean' },
  stream: { type: 'boolean' },
  'max-new-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  seed: { type: 'string' },
  'texts-json': { type: 'string' },
  query: { type: 'string' },
  'documents-json': { type: 'string' },
  'top-n': { type: 'string' },
  threads: { type: 'string' },
};

async function main(argv) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError(e.message);
  }
  const { values, positionals } = parsed;
  const [command, bundle, ...extra] = positionals;
  if (!command || !bundle || extra.length) throw new UsageError(`expected a command and one bundle folder, got ${JSON.stringify(positionals)}`);
  const options = { threads: optionalNumber(values.threads, 'threads', true) };
  if (command === 'verify') {
    const report = await verify(bundle, options);
    print(report);
    return report.passed ? 0 : 1;
  }
  if (command === 'generate') return generate(bundle, values, options);
  if (command === 'embed') {
    const texts = parseJson(values['texts-json'], '--texts-json');
    const model = await load(bundle, options);
    if (typeof model.embed !== 'function') throw new GenerationError(`embed needs a feature-extraction bundle, but ${bundle} is a ${model.task} bundle`);
    const vectors = await model.embed(texts, { prompt: values.prompt });
    print({ vectors: vectors.map((v) => Array.from(v)) });
    return 0;
  }
  if (command === 'rerank') {
    if (values.query === undefined) throw new UsageError('--query is required');
    const documents = parseJson(values['documents-json'], '--documents-json');
    const topN = optionalNumber(values['top-n'], 'top-n', true);
    const model = await load(bundle, options);
    if (typeof model.rerank !== 'function') {
      throw new GenerationError(`rerank needs a text-classification bundle with one label (a cross-encoder), but ${bundle} is a ${model.task} bundle`);
    }
    print({ results: await model.rerank(values.query, documents, { topN }) });
    return 0;
  }
  throw new UsageError(`unknown command ${JSON.stringify(command)}`);
}

async function generate(bundle, values, options) {
  if ((values['ids-json'] === undefined) === (values.prompt === undefined)) throw new UsageError('generate takes exactly one of --ids-json and --prompt');
  const sampling = {
    maxNewTokens: optionalNumber(values['max-new-tokens'], 'max-new-tokens', true),
    temperature: optionalNumber(values.temperature, 'temperature'),
    topK: optionalNumber(values['top-k'], 'top-k', true),
    topP: optionalNumber(values['top-p'], 'top-p'),
    seed: optionalNumber(values.seed, 'seed', true),
  };
  for (const key of Object.keys(sampling)) if (sampling[key] === undefined) delete sampling[key];
  const model = await load(bundle, options);
  if (typeof model.generateIds !== 'function') throw new GenerationError(`generate needs a text-generation bundle, but ${bundle} is a ${model.task} bundle`);
  if (values['ids-json'] !== undefined) {
    if (values.chat || values.stream) throw new UsageError('--chat and --stream go with --prompt, not --ids-json');
    const rows = parseJson(values['ids-json'], '--ids-json');
    print({ rows: await model.generateIds(rows, { temperature: 0, ...sampling }) });
    return 0;
  }
  const request = { chat: Boolean(values.chat), ...sampling };
  if (!values.stream) {
    const { text, ids, finish } = await model.generate(values.prompt, request);
    print({ text, ids, finish });
    return 0;
  }
  const stream = model.stream(values.prompt, request);
  let step = await stream.next();
  while (!step.done) {
    process.stdout.write(step.value);
    step = await stream.next();
  }
  process.stdout.write('\n');
  const { text, ids, finish } = step.value;
  print({ text, ids, finish });
  return 0;
}

/** VALUE parsed as a number (whole when WHOLE), undefined when absent. */
function optionalNumber(value, name, whole = false) {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (value.trim() === '' || !Number.isFinite(number) || (whole && !Number.isInteger(number))) {
    throw new UsageError(`--${name} must be ${whole ? 'a whole number' : 'a number'}, got ${JSON.stringify(value)}`);
  }
  return number;
}

function parseJson(text, flag) {
  if (text === undefined) throw new UsageError(`${flag} is required`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${flag} is not valid JSON (${e.message})`);
  }
}

function print(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** One line for stderr: the message without newlines. */
function oneLine(message) {
  return String(message).replace(/\s*\n\s*/g, ' ');
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  if (e instanceof UsageError) process.stderr.write(`error: ${oneLine(e.message)}; ${USAGE}\n`);
  else if (e instanceof BundleError || e instanceof GenerationError) process.stderr.write(`error: ${oneLine(e.message)}\n`);
  else process.stderr.write(`error: ${oneLine(e?.stack?.split('\n')[0] ?? e)}\n`);
  process.exitCode = 2;
}

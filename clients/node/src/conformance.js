/**
 * Run a bundle's conformance vectors (conformance.json, docs/conformance.md) and say, per
 * vector, whether this runtime computes what edgelm recorded, and how far off it is.
 *
 *   const report = await runConformance(model, vectors);
 *   // [{name, kind, passed, detail}], detail e.g. "2 rows: greedy ids agree, top-5 logits within 0"
 *
 * Token ids are checked before any number, so a tokenizer fault is reported as one. Tolerances
 * are the file's own (`tolerances`), chosen where it was written from the bundle's precision.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';

import { BundleError } from './errors.js';
import { EOS } from './generator.js';
import { argmax } from './sampling.js';

/** The newest conformance_version this runner knows. */
export const CONFORMANCE_VERSION = 1;

/**
 * @typedef {{name: string, kind: string, passed: boolean, detail: string}} Outcome
 * @typedef {{logit_abs: number, tie_margin: number, value_abs: number, cosine_min: number}} Tolerances
 */

/**
 * The parsed conformance.json a manifest names (its checksum was checked with the other files).
 * @param {string} folder
 * @param {Record<string, any>} manifest
 */
export function readConformance(folder, manifest) {
  const name = manifest.conformance;
  if (!name) {
    throw new BundleError(`${folder} carries no conformance vectors (the manifest names no conformance file: it was written `
      + 'before edgelm 0.3); re-export it (or quantize it again) to add them');
  }
  let data;
  try {
    data = JSON.parse(readFileSync(path.join(folder, name), 'utf8'));
  } catch (e) {
    throw new BundleError(`${path.join(folder, name)} is not readable JSON (${e.message}); re-export the bundle`);
  }
  if (typeof data !== 'object' || data === null || !Array.isArray(data.vectors) || typeof data.tolerances !== 'object' || data.tolerances === null) {
    throw new BundleError(`${path.join(folder, name)} has no vectors or tolerances; re-export the bundle`);
  }
  return data;
}

/**
 * Run every vector of CONFORMANCE on MODEL.
 * @param {import('./decoder.js').LanguageModel | import('./encoder.js').Encoder} model
 * @param {Record<string, any>} conformance parsed conformance.json
 * @returns {Promise<Outcome[]>}
 */
export async function runConformance(model, conformance) {
  const vectors = conformance.vectors;
  const version = conformance.conformance_version;
  if (!Number.isInteger(version) || version > CONFORMANCE_VERSION) {
    return vectors.map((v, i) => ({
      name: String(v?.name ?? `vector ${i}`), kind: String(v?.kind ?? '?'), passed: false,
      detail: `not run: conformance_version ${JSON.stringify(version)} is not one this runner knows (${CONFORMANCE_VERSION}); upgrade edgelm-bundle`,
    }));
  }
  /** @type {Tolerances} */
  const tol = Object.fromEntries(['logit_abs', 'tie_margin', 'value_abs', 'cosine_min'].map((k) => [k, Number(conformance.tolerances[k])]));
  const outcomes = [];
  for (const [i, vector] of vectors.entries()) {
    const name = String(vector?.name ?? `vector ${i}`);
    const kind = String(vector?.kind ?? '?');
    const checker = CHECKERS[kind];
    if (!checker) {
      outcomes.push({ name, kind, passed: false, detail: `unknown kind ${JSON.stringify(kind)}: not run (upgrade edgelm-bundle)` });
      continue;
    }
    try {
      const [passed, detail] = await checker(model, vector, tol);
      outcomes.push({ name, kind, passed, detail });
    } catch (e) {
      outcomes.push({ name, kind, passed: false, detail: `failed to run (${e.name}: ${e.message})` });
    }
  }
  return outcomes;
}

// -- tokens and chat ---------------------------------------------------------------------------

function checkTokens(model, vector) {
  const got = model.task === 'text-generation'
    ? model.tokenizer.encode(vector.text, { addSpecialTokens: Boolean(vector.add_special_tokens) })
    : model.tokenizer.encode(vector.text, { addSpecialTokens: Boolean(vector.add_special_tokens), maxLength: model.manifest.max_context });
  return sameIds(got, vector.ids);
}

function checkChat(model, vector) {
  const rendered = model.renderChat(vector.messages, { addGenerationPrompt: Boolean(vector.add_generation_prompt) });
  if (rendered !== vector.rendered) {
    const at = firstDifference([...rendered], [...vector.rendered]);
    const [a, b] = [[...rendered].slice(at, at + 20).join(''), [...vector.rendered].slice(at, at + 20).join('')];
    return [false, `rendered text differs at character ${at}: ${JSON.stringify(a)} instead of ${JSON.stringify(b)}`];
  }
  return sameIds(model.tokenizer.encode(rendered, { addSpecialTokens: false }), vector.ids);
}

/** [equal, detail] for two id lists. */
function sameIds(got, want) {
  const at = firstDifference(got, want);
  if (at === -1) return [true, `${want.length} ids equal`];
  return [false, `ids differ at ${at}: ${JSON.stringify(got.slice(at, at + 4))} instead of ${JSON.stringify(want.slice(at, at + 4))} `
    + `(${got.length} ids, ${want.length} recorded)`];
}

/** Index of the first difference of two sequences (a length difference counts), or -1. */
function firstDifference(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

// -- greedy ------------------------------------------------------------------------------------

const CHOSE_EOS = -1; // "chose an eos id": which one was chosen is not recorded

async function checkGreedy(model, vector, tol) {
  const rows = vector.rows;
  const gen = model.generator({ maxNewTokens: Number(vector.max_new_tokens), temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: null });
  await gen.appendTokens(rows.map((r) => r.prompt_ids)); // argmax of raw logits: no penalty, no generation defaults
  while (!gen.isDone()) await gen.generateNextToken();
  const problems = [];
  const notes = [];
  let worst = 0;
  rows.forEach((want, r) => {
    const first = gen.firstLogits[r];
    const off = Math.max(...want.top5.map(([id, value]) => Math.abs(first[id] - value)));
    worst = Math.max(worst, off);
    if (!(off <= tol.logit_abs)) problems.push(`row ${r}: first-step logits off by ${fmt(off)} (tolerance ${tol.logit_abs})`);
    const ids = gen.newTokens(r);
    const have = gen.finishReason(r) === EOS ? [...ids.slice(0, -1), CHOSE_EOS] : ids;
    const verdict = greedyAgreement(want.finish === 'eos' ? [...want.ids, CHOSE_EOS] : want.ids, have, want.margins, tol.tie_margin);
    if (verdict.startsWith('differ')) problems.push(`row ${r}: ${verdict}`);
    else if (verdict) notes.push(`row ${r}: ${verdict}`);
  });
  if (problems.length) return [false, problems.join('; ')];
  const detail = `${rows.length} row${rows.length > 1 ? 's' : ''}: greedy ids agree, top-5 logits within ${fmt(worst)}`;
  return [true, notes.length ? `${detail} (${notes.join('; ')})` : detail];
}

/**
 * '' when the recorded and computed tokens are equal; a near-tie note when they first part at
 * a step whose recorded top-1/top-2 margin was below TIE_MARGIN (the rest is not compared);
 * 'differ...' otherwise.
 */
function greedyAgreement(want, have, margins, tieMargin) {
  const at = firstDifference(want, have);
  if (at === -1) return '';
  const margin = margins[at];
  if (at < Math.min(want.length, have.length)) {
    if (margin !== undefined && margin < tieMargin) return `diverged at a near-tie at step ${at} (margin ${fmt(margin)})`;
    return `differ at step ${at}: ${token(have[at])} instead of ${token(want[at])} (recorded margin ${fmt(margin)})`;
  }
  return `differ in length: ${have.length} tokens instead of ${want.length}`;
}

const token = (t) => (t === CHOSE_EOS ? 'eos' : String(t));

// -- encoders ----------------------------------------------------------------------------------

/** The encoder's output for the vector's texts, run as one batch, after checking their ids. */
async function encoderRows(model, vector) {
  const ids = model.encode(vector.texts);
  for (const [r, row] of vector.rows.entries()) {
    const [same, detail] = sameIds(ids[r], row.ids);
    if (!same) return { problem: `text ${r}: ${detail}` };
  }
  return { rows: await model.output(vector.texts, vector.output, { batchSize: vector.texts.length }) };
}

async function checkEmbedding(model, vector, tol) {
  const { rows, problem } = await encoderRows(model, vector);
  if (problem) return [false, problem];
  let worstAbs = 0;
  let worstCos = 1;
  rows.forEach((have, r) => {
    const want = vector.rows[r].values;
    if (want.length !== have.values.length) throw new Error(`row ${r} has ${have.values.length} values, ${want.length} recorded`);
    let dot = 0; let nh = 0; let nw = 0;
    want.forEach((w, j) => {
      const h = have.values[j];
      worstAbs = Math.max(worstAbs, Math.abs(h - w));
      dot += h * w; nh += h * h; nw += w * w;
    });
    worstCos = Math.min(worstCos, dot / Math.max(Math.sqrt(nh) * Math.sqrt(nw), 1e-30));
  });
  const passed = worstAbs <= tol.value_abs && worstCos >= tol.cosine_min;
  return [passed, `max |diff| ${fmt(worstAbs)} (tolerance ${tol.value_abs}), min cosine ${worstCos.toFixed(6)} (at least ${tol.cosine_min})`];
}

async function checkLogits(model, vector, tol) {
  const { rows, problem } = await encoderRows(model, vector);
  if (problem) return [false, problem];
  let worst = 0;
  const problems = [];
  rows.forEach((have, r) => {
    const recorded = vector.rows[r];
    const want = recorded.values.flat();
    if (want.length !== have.values.length) throw new Error(`row ${r}: ${have.values.length} logits instead of ${want.length}`);
    want.forEach((w, j) => { worst = Math.max(worst, Math.abs(have.values[j] - w)); });
    if ('label' in recorded) {
      const label = labelOf(model, argmax(have.values));
      const margin = recorded.margin ?? marginOf(want);
      if (label !== recorded.label && !(margin < tol.tie_margin)) problems.push(`row ${r}: label ${JSON.stringify(label)} instead of ${JSON.stringify(recorded.label)}`);
    }
  });
  if (!(worst <= tol.logit_abs)) problems.unshift(`logits off by ${fmt(worst)} (tolerance ${tol.logit_abs})`);
  return [problems.length === 0, problems.length ? problems.join('; ') : `logits within ${fmt(worst)}`];
}

async function checkFillMask(model, vector, tol) {
  const { rows, problem } = await encoderRows(model, vector);
  if (problem) return [false, problem];
  let worst = 0;
  rows.forEach((have, r) => {
    for (const mask of vector.rows[r].masks) {
      for (const [id, value] of mask.top5) worst = Math.max(worst, Math.abs(have.values[mask.position * have.width + id] - value));
    }
  });
  return [worst <= tol.logit_abs, `top-5 logits at the masks off by ${fmt(worst)} (tolerance ${tol.logit_abs})`];
}

/** The recorded label name of class I: labels[i], else the index as text (as edgelm records it). */
function labelOf(model, i) {
  const labels = model.manifest.labels ?? [];
  return i < labels.length ? labels[i] : String(i);
}

/** Gap between the two largest values. */
function marginOf(values) {
  const sorted = [...values].sort((a, b) => b - a);
  return sorted.length > 1 ? sorted[0] - sorted[1] : Infinity;
}

const fmt = (x) => (x === undefined ? '?' : Number(x.toPrecision(3)).toString());

/** @type {Record<string, (model: any, vector: any, tol: Tolerances) => Promise<[boolean, string]> | [boolean, string]>} */
const CHECKERS = {
  tokens: checkTokens,
  chat: checkChat,
  greedy: checkGreedy,
  embedding: checkEmbedding,
  logits: checkLogits,
  token_logits: checkLogits,
  fill_mask: checkFillMask,
};

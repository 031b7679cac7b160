/**
 * Reranking with a cross-encoder bundle, as edgelm's runtime/ranking.py does it: a
 * text-classification bundle with exactly one label, fed the query and one document as a text
 * pair; the score is the sigmoid of its one logit (sentence-transformers' CrossEncoder.predict
 * for num_labels == 1), so scores lie in (0, 1); documents are ordered best first, ties in their
 * own order.
 */

import { GenerationError } from './errors.js';

const LOGITS = 'logits';

/**
 * Why the bundle cannot rerank ('' when it can): it must be a one-label text classifier.
 * @param {Record<string, any>} manifest
 * @param {string} folder
 */
export function rerankerProblem(manifest, folder) {
  if (manifest.task !== 'text-classification') {
    return `rerank needs a text-classification bundle with one label (a cross-encoder), but ${folder} is a ${manifest.task} bundle; `
      + 'export a cross-encoder checkpoint (edgelm export CHECKPOINT OUT)';
  }
  const count = labelCount(manifest);
  if (count !== 1) {
    return `rerank needs a cross-encoder (a text classifier with one label), but ${folder} has `
      + `${count ?? 'an unknown number of'} labels; use classify for it, or export a cross-encoder checkpoint`;
  }
  return '';
}

/** Labels of a classifier: the manifest's names, else the last dimension of its logits output (null: unknown). */
export function labelCount(manifest) {
  if (Array.isArray(manifest.labels)) return manifest.labels.length;
  const last = manifest.graph.outputs.find((t) => t.name === LOGITS)?.shape.at(-1);
  return Number.isInteger(last) ? last : null;
}

/** QUERY, or a GenerationError when it is not a non-blank, well-formed string. */
export function checkQuery(query) {
  if (typeof query !== 'string') throw new GenerationError(`query must be a string, got ${query === null ? 'null' : typeof query}`);
  if (!query.trim()) throw new GenerationError('query is empty or only whitespace; pass the text to rank the documents against');
  if (!query.isWellFormed()) throw new GenerationError('query holds an unpaired surrogate (not valid Unicode)');
  return query;
}

/** TOP_N: undefined or null for every document, else a whole number >= 1. */
export function checkTopN(topN) {
  if (topN !== undefined && topN !== null && !(Number.isInteger(topN) && topN >= 1)) {
    throw new GenerationError(`topN must be a whole number >= 1 (or left out for every document), got ${topN}`);
  }
}

/** CrossEncoder's activation for one label, in float64. @param {number} logit */
export function sigmoid(logit) {
  return 1 / (1 + Math.exp(-logit));
}

/**
 * [{index, score}] by score, best first (ties keep the documents' order); the first TOP_N.
 * @param {ArrayLike<number>} scores
 * @param {number | null} [topN]
 */
export function ranked(scores, topN = null) {
  const order = [...Array(scores.length).keys()].sort((a, b) => scores[b] - scores[a] || a - b);
  return order.slice(0, topN ?? scores.length).map((index) => ({ index, score: scores[index] }));
}

/**
 * Choosing the next token from one row of logits (Float32Array of the vocabulary).
 *
 * The order follows transformers' generate, as docs/bundle-format.md step 4 says: repetition
 * penalty first (greedy too), then temperature, top-k, top-p (the smallest set of tokens whose
 * probability reaches top_p, never empty), softmax and one draw. Temperature 0 is greedy
 * (argmax, the first index on a tie, like numpy). Draws come from a seeded xoshiro128**, so a
 * seed reproduces a run; it does not reproduce Python's numpy draws (a different generator).
 */

import { randomInt } from 'node:crypto';

import { GenerationError } from './errors.js';

/**
 * A seeded pseudo-random generator of doubles in [0, 1): xoshiro128** seeded through splitmix32.
 * STREAM picks an independent sequence for the same seed (one per batch row, so that a row draws
 * the same numbers whatever else is in the batch).
 * @param {number | null} seed a whole number >= 0, or null for a random seed
 * @param {number} [stream]
 * @returns {() => number}
 */
export function seededRandom(seed, stream = 0) {
  const value = seed ?? randomInt(0, 2 ** 47);
  let s = value >>> 0;
  const mix = (Math.floor(value / 2 ** 32) ^ Math.imul(stream + 1, 0x9e3779b1)) >>> 0;
  const splitmix = () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s ^ mix;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  const state = new Uint32Array([splitmix(), splitmix(), splitmix(), splitmix()]);
  const rotl = (x, k) => ((x << k) | (x >>> (32 - k))) >>> 0;
  const next32 = () => {
    const result = Math.imul(rotl(Math.imul(state[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (state[1] << 9) >>> 0;
    state[2] ^= state[0];
    state[3] ^= state[1];
    state[1] ^= state[2];
    state[0] ^= state[3];
    state[2] ^= t;
    state[3] = rotl(state[3], 11);
    return result;
  };
  return () => ((next32() >>> 5) * 67108864 + (next32() >>> 6)) / 9007199254740992; // 53 random bits
}

/**
 * Check sampling options; throws one GenerationError listing every value out of range.
 * @param {{temperature: number, topK: number, topP: number, repetitionPenalty: number}} p
 */
export function checkSampling({ temperature, topK, topP, repetitionPenalty }) {
  const problems = [];
  const finite = (x) => typeof x === 'number' && Number.isFinite(x);
  if (!finite(temperature) || temperature < 0) problems.push(`temperature must be a finite number >= 0 (0 = greedy), got ${temperature}`);
  if (!Number.isInteger(topK) || topK < 0) problems.push(`top_k must be a whole number >= 0 (0 = off), got ${topK}`);
  if (!finite(topP) || !(topP > 0 && topP <= 1)) problems.push(`top_p must be a number in (0, 1], got ${topP}`);
  if (!finite(repetitionPenalty) || repetitionPenalty <= 0) problems.push(`repetition_penalty must be a finite number > 0 (1 = off), got ${repetitionPenalty}`);
  if (problems.length) throw new GenerationError(problems.join('; '));
}

/** Index of the largest value (the first one on a tie). @param {ArrayLike<number>} values */
export function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/**
 * CTRL's repetition penalty as transformers applies it, on a copy: the logit of every id in
 * SEEN is divided by PENALTY when positive, multiplied by it when negative.
 * @param {Float32Array} logits
 * @param {Iterable<number>} seen
 * @param {number} penalty
 */
export function applyRepetitionPenalty(logits, seen, penalty) {
  if (penalty === 1) return logits;
  const out = Float32Array.from(logits);
  for (const id of new Set(seen)) out[id] = out[id] > 0 ? out[id] / penalty : out[id] * penalty;
  return out;
}

/**
 * A function (logits, random) -> id for these options; temperature 0 gives argmax.
 * @param {{temperature: number, topK: number, topP: number}} options
 * @returns {(logits: Float32Array, random: () => number) => number}
 */
export function makeSampler({ temperature, topK, topP }) {
  if (temperature === 0) return (logits) => argmax(logits);
  return (logits, random) => sampleOne(logits, temperature, topK, topP, random);
}

/** One draw from LOGITS after temperature, top-k and top-p (float64 arithmetic throughout). */
function sampleOne(logits, temperature, topK, topP, random) {
  const vocab = logits.length;
  // candidates: every id, or only those at or above the k-th largest score (ties kept, as transformers)
  let candidates;
  if (topK > 0 && topK < vocab) {
    const kth = kthLargest(logits, topK);
    candidates = [];
    for (let i = 0; i < vocab; i++) if (logits[i] >= kth) candidates.push(i);
  } else {
    candidates = Int32Array.from({ length: vocab }, (_, i) => i);
  }
  // softmax of score / temperature; the best score maps to 0 first, so a tiny temperature cannot overflow
  let top = -Infinity;
  for (const i of candidates) if (logits[i] > top) top = logits[i];
  const probs = new Float64Array(candidates.length);
  let total = 0;
  for (let j = 0; j < candidates.length; j++) {
    const score = logits[candidates[j]];
    probs[j] = Math.exp(score === top ? 0 : (score - top) / temperature);
    total += probs[j];
  }
  for (let j = 0; j < probs.length; j++) probs[j] /= total;
  const order = topP < 1 ? nucleus(probs, topP) : Int32Array.from({ length: probs.length }, (_, j) => j);
  const draw = random();
  let cumulative = 0;
  for (const j of order) {
    cumulative += probs[j];
    if (cumulative >= draw) return candidates[j];
  }
  return candidates[order[order.length - 1]];
}

/**
 * Indices (ascending) of the smallest set of PROBS, taken from the most probable down, whose
 * probability reaches TOP_P (a token is kept while the mass above it is below TOP_P; ties at
 * the cut go to the lower index, as a stable sort by score does); PROBS is renormalised over
 * them in place. Sorting the probabilities once (native numeric sort) finds the cut; only those
 * at or above a floor are sorted when they alone reach TOP_P (they are a prefix of the order,
 * so the set is the same).
 */
function nucleus(probs, topP) {
  let floor = 0;
  for (const candidate of [1e-3, 1e-5, 1e-7]) {
    let mass = 0;
    for (let j = 0; j < probs.length; j++) if (probs[j] >= candidate) mass += probs[j];
    if (mass >= topP) { floor = candidate; break; }
  }
  const sorted = probs.filter((p) => p >= floor).sort().reverse(); // descending
  let before = 0;
  let kept = 0;
  while (kept < sorted.length && before < topP) before += sorted[kept++];
  const cut = sorted[kept - 1];
  let ties = kept;
  for (let j = 0; j < probs.length; j++) if (probs[j] > cut) ties--;
  const order = [];
  let mass = 0;
  for (let j = 0; j < probs.length; j++) {
    if (probs[j] > cut || (probs[j] === cut && ties-- > 0)) {
      order.push(j);
      mass += probs[j];
    }
  }
  for (const j of order) probs[j] /= mass;
  return order;
}

/** The K-th largest value of VALUES (K >= 1): a size-K min-heap for small K, else a sort. */
function kthLargest(values, k) {
  if (k > 256) return Float32Array.from(values).sort()[values.length - k]; // ascending, native numeric sort
  const heap = new Float64Array(k).fill(-Infinity); // heap[0] is the smallest of the K largest so far
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!(v > heap[0])) continue;
    let at = 0; // replace the root and sift it down
    for (;;) {
      const left = 2 * at + 1;
      if (left >= k) break;
      const child = left + 1 < k && heap[left + 1] < heap[left] ? left + 1 : left;
      if (heap[child] >= v) break;
      heap[at] = heap[child];
      at = child;
    }
    heap[at] = v;
  }
  return heap[0];
}

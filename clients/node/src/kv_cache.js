/**
 * The KV cache of a decoder bundle: one buffer per layer and kind (key, value) of shape
 * (slots, kv_heads, capacity, head_size) and type kv_cache.dtype, zero-filled, plus each row's
 * length.
 *
 * Each buffer is one typed array. The same ort.Tensor over it is passed as the past input and
 * as the pre-allocated present output of session.run, so onnxruntime's GroupQueryAttention
 * writes the new keys and values into it in place ("shared-buffer"). A row is bound alone
 * through a typed-array view of rows b..b (a subarray over the same ArrayBuffer:
 * onnxruntime-node passes its byteOffset through to the native tensor).
 *
 * Capacity grows with the rows, in chunks of GROWTH_CHUNK positions (each growth copies every
 * row once): it is always at least the longest row plus the one spare position a finished row's
 * filler token is written to, and at most max_context + 1. It is kept small on purpose:
 * onnxruntime-node 1.30 copies every pre-allocated output into a fresh JavaScript buffer after
 * each run (the graph itself updates the cache in place, in constant time), so a step costs
 * time in proportion to the capacity (README.md, "Performance"). Allocating max_new_tokens up
 * front would make every step of a long generation pay for its end.
 *
 * LongRoPE (kv_cache.rope_switch, Phi-3.5 / Phi-4-mini): keys cached while a row held at most
 * rope_switch tokens were rotated for short contexts. The cache then keeps each row's ids, and
 * a row that grows past the switch (or is cut back under it) has its whole sequence run again in
 * one call (mustRerun; DecoderGraph.rerun), as edgelm's runtime does. Without a switch no ids are
 * kept.
 */

import ort from 'onnxruntime-node';

import { BundleError } from './errors.js';

/** kv_cache.dtype -> typed array holding it. */
const ARRAYS = { float32: Float32Array, int8: Int8Array, float16: Uint16Array };

/** Capacity grows by whole chunks when a row would outgrow it. */
export const GROWTH_CHUNK = 64;

export class KVCache {
  /**
   * @param {Record<string, any>} layout the manifest's kv_cache
   * @param {number} slots rows of the batch
   * @param {number} maxPositions max_context: no token is placed past it
   * @param {number} tokens tokens each row must hold at first (capacity is at least one more)
   */
  constructor(layout, slots, maxPositions, tokens) {
    const ArrayType = ARRAYS[layout.dtype];
    if (!ArrayType) throw new BundleError(`kv_cache.dtype ${layout.dtype} is not one of ${Object.keys(ARRAYS).join(', ')}; re-export the bundle`);
    this.layout = layout;
    this.ArrayType = ArrayType;
    this.slots = slots;
    this.maxPositions = maxPositions;
    /** tokens each row holds; row r's keys sit at positions 0 .. lengths[r] - 1 */
    this.lengths = new Array(slots).fill(0);
    this.capacity = 0;
    /** @type {{past: string, present: string, data: Int8Array | Float32Array | Uint16Array}[]} */
    this.buffers = [];
    for (let layer = 0; layer < layout.num_layers; layer++) {
      for (const kind of ['key', 'value']) {
        this.buffers.push({
          past: layout[`past_${kind}`].replaceAll('{layer}', String(layer)),
          present: layout[`present_${kind}`].replaceAll('{layer}', String(layer)),
          data: new ArrayType(0),
        });
      }
    }
    /** @type {Map<string, ort.Tensor[]>} tensors over rows start..stop-1, by "start:stop" */
    this.views = new Map();
    /** LongRoPE: the switch (kv_cache.rope_switch), null without one */
    this.switch = layout.rope_switch || null;
    /** @type {number[][] | null} each row's ids, kept only with a switch (to run again when the row crosses it) */
    this.tokens = this.switch ? Array.from({ length: slots }, () => []) : null;
    /** @type {Set<number>} rows cut back under the switch, their keys rotated for long contexts */
    this.stale = new Set();
    this.reserve(tokens);
  }

  /** Elements of one row of one buffer: kv_heads * capacity * head_size. */
  get rowElements() {
    return this.layout.num_kv_heads * this.capacity * this.layout.head_size;
  }

  /**
   * Make room for every row to hold TOKENS tokens plus the filler's spare position.
   * @param {number} tokens
   */
  reserve(tokens) {
    const needed = Math.min(tokens, this.maxPositions) + 1;
    if (needed <= this.capacity) return;
    const capacity = Math.min(Math.ceil(needed / GROWTH_CHUNK) * GROWTH_CHUNK, this.maxPositions + 1);
    const { num_kv_heads: heads, head_size: headSize } = this.layout;
    for (const buffer of this.buffers) {
      const fresh = new this.ArrayType(this.slots * heads * capacity * headSize); // zero-filled
      if (this.capacity > 0) {
        const run = this.capacity * headSize; // one (slot, head) of the old buffer
        for (let sh = 0; sh < this.slots * heads; sh++) {
          fresh.set(buffer.data.subarray(sh * run, (sh + 1) * run), sh * capacity * headSize);
        }
      }
      buffer.data = fresh;
    }
    this.capacity = capacity;
    this.views.clear();
  }

  /**
   * ort.Tensors over rows START..STOP-1 of every buffer, in this.buffers' order: each is bound
   * as both the past input and the present output (the same memory in and out).
   * @param {number} start
   * @param {number} stop
   * @returns {ort.Tensor[]}
   */
  tensors(start, stop) {
    const key = `${start}:${stop}`;
    let views = this.views.get(key);
    if (!views) {
      const row = this.rowElements;
      const dims = [stop - start, this.layout.num_kv_heads, this.capacity, this.layout.head_size];
      views = this.buffers.map((b) => new ort.Tensor(this.layout.dtype, b.data.subarray(start * row, stop * row), dims));
      this.views.set(key, views);
    }
    return views;
  }

  /**
   * Feeds and fetches binding rows START..STOP-1 as past and present.
   * @returns {{feeds: Record<string, ort.Tensor>, fetches: Record<string, ort.Tensor>}}
   */
  bind(start, stop) {
    const feeds = {};
    const fetches = {};
    this.tensors(start, stop).forEach((tensor, i) => {
      feeds[this.buffers[i].past] = tensor;
      fetches[this.buffers[i].present] = tensor;
    });
    return { feeds, fetches };
  }

  /**
   * Position where each row takes its next token. A row that is not LIVE gets a filler token
   * at its spare position just past its tokens (the model's last position when the row is full).
   * @param {boolean[] | null} live
   */
  starts(live = null) {
    return this.lengths.map((length, row) => (live && !live[row] ? Math.min(length, this.maxPositions - 1) : length));
  }

  /**
   * Rows ROWS now hold N more tokens (their keys were written by the call just run); IDS[i]
   * (N ids) are row ROWS[i]'s, kept only with a switch (pass null without one).
   * @param {number[]} rows
   * @param {number} n
   * @param {number[][] | null} ids
   */
  advance(rows, n, ids = null) {
    rows.forEach((row, i) => {
      this.lengths[row] += n;
      if (this.tokens && ids) {
        const held = this.tokens[row];
        for (const id of ids[i]) held.push(id);
      }
    });
  }

  /**
   * Keep only the first KEEP tokens of ROW (a rewind): the rest is overwritten later.
   * @param {number} row
   * @param {number} keep
   */
  trim(row, keep) {
    if (!(Number.isInteger(keep) && keep >= 0 && keep <= this.lengths[row])) {
      throw new RangeError(`cannot keep ${keep} tokens of a row holding ${this.lengths[row]}`);
    }
    if (this.tokens) {
      if (this.lengths[row] > this.switch && this.switch >= keep) this.stale.add(row);
      this.tokens[row].length = keep;
    }
    this.lengths[row] = keep;
  }

  /** Empty ROW so that a new sequence can use its slot. @param {number} row */
  clear(row) {
    this.lengths[row] = 0;
    if (this.tokens) {
      this.tokens[row] = [];
      this.stale.delete(row);
    }
  }

  /**
   * LongRoPE: whether ROW's whole sequence must run again before N more tokens (it crosses the
   * switch, or was cut back under it); always false without a switch.
   * @param {number} row
   * @param {number} n
   */
  mustRerun(row, n) {
    if (!this.tokens) return false;
    const held = this.lengths[row];
    return this.stale.has(row) || (held <= this.switch && this.switch < held + n);
  }
}

/**
 * The bundles the test suite runs on: EDGELM_NODE_BUNDLES, folders separated by ':'.
 *
 * Unset or empty, every test file registers one failing test that says so: the suite never
 * passes without having run a bundle. (This file is outside test/ because `node --test test/`
 * runs every .js file below test/ as a test file.)
 */

import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import assert from 'node:assert/strict';

export const BUNDLES = (process.env.EDGELM_NODE_BUNDLES ?? '').split(':').map((s) => s.trim()).filter(Boolean);

/**
 * BUNDLES, or (when none are given) [] after registering a failing test naming the variable.
 * @returns {string[]}
 */
export function bundlesOrFail() {
  if (BUNDLES.length === 0) {
    test('EDGELM_NODE_BUNDLES names the bundles to test', () => {
      assert.fail('set EDGELM_NODE_BUNDLES to one or more bundle folders separated by ":" '
        + '(e.g. EDGELM_NODE_BUNDLES=/work/conf-bundles/tiny-llama:/work/conf-bundles/minilm npm test)');
    });
  }
  return BUNDLES;
}

/** The parsed manifest.json of FOLDER (no checks: the tests check). */
export function manifestOf(folder) {
  return JSON.parse(readFileSync(path.join(folder, 'manifest.json'), 'utf8'));
}

/** Whether FOLDER is a decoder bundle. */
export function isDecoder(folder) {
  return manifestOf(folder).task === 'text-generation';
}

/** Bytes of every file in FOLDER. */
export function folderBytes(folder) {
  return readdirSync(folder).reduce((sum, name) => sum + statSync(path.join(folder, name)).size, 0);
}

/** The tolerances in FOLDER's conformance.json (fp32's when it has none). */
export function tolerancesOf(folder) {
  const name = manifestOf(folder).conformance;
  if (!name) return { logit_abs: 2e-3, tie_margin: 2e-3, value_abs: 1e-4, cosine_min: 0.99999 };
  return JSON.parse(readFileSync(path.join(folder, name), 'utf8')).tolerances;
}

/**
 * edgelm-bundle: run edgelm bundles from Node.js.
 *
 *   import { load, verify } from 'edgelm-bundle';
 *   const lm = await load('bundles/smollm2-int8');           // LanguageModel (text-generation)
 *   (await lm.generate('What is the capital of France?', { chat: true })).text;
 *   const enc = await load('bundles/minilm');                 // Encoder (the other tasks)
 *   await enc.embed(['a sentence']);
 *   const { passed, vectors } = await verify('bundles/smollm2-int8');   // its conformance vectors
 */

import { load } from './bundle.js';
import { readConformance, runConformance } from './conformance.js';

export { load } from './bundle.js';
export { LanguageModel } from './decoder.js';
export { Encoder } from './encoder.js';
export { BundleError, GenerationError } from './errors.js';
export { checkFiles, readManifest } from './manifest.js';
export { runConformance } from './conformance.js';

/**
 * Check FOLDER's files, open it and run its conformance vectors on this machine.
 * Throws BundleError when the bundle cannot be opened or carries no vectors; a vector that
 * does not match is a failed entry, not an exception.
 * @param {string} folder
 * @param {{threads?: number}} [options]
 * @returns {Promise<{passed: boolean, vectors: import('./conformance.js').Outcome[]}>}
 */
export async function verify(folder, options = {}) {
  const model = await load(folder, options);
  const vectors = await runConformance(model, readConformance(folder, model.manifest));
  return { passed: vectors.length > 0 && vectors.every((v) => v.passed), vectors };
}

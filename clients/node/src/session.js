/**
 * Open the onnxruntime session of a bundle's graph, from its file path (so that onnxruntime
 * finds external data beside it), on the CPU.
 *
 * The graph optimisations are those of edgelm's Python runtime (runtime/session.py): all of
 * them but SkipLayerNormFusion, which it leaves out on the CPU (slower there). The docs do not
 * ask for this, but it changes arithmetic: with the fusion on, all-MiniLM-L6-v2 INT8 embeddings
 * differ from the recorded ones by up to 2.1e-3 (the int8 tolerance is 2e-3); without it they
 * are equal. Float graphs and edgelm's decoder graphs (which carry their skip-norms explicitly)
 * are unaffected.
 */

import { availableParallelism } from 'node:os';
import path from 'node:path';

import ort from 'onnxruntime-node';

import { BundleError } from './errors.js';

/** Graph fusions edgelm's runtime leaves out on the CPU (runtime/session.py CPU_SLOWER_FUSIONS). */
const CPU_LEFT_OUT_FUSIONS = ['SkipLayerNormFusion'];

/**
 * @param {string} folder
 * @param {Record<string, any>} manifest
 * @param {{threads?: number}} [options] intra-op threads; default: the CPUs this process may use
 * @returns {Promise<ort.InferenceSession>}
 */
export async function openSession(folder, manifest, { threads } = {}) {
  const file = path.join(folder, manifest.graph.file);
  try {
    return await ort.InferenceSession.create(file, {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      intraOpNumThreads: threads ?? availableParallelism(),
      logSeverityLevel: 3, // errors only
      extra: { optimization: { disable_specified_optimizers: CPU_LEFT_OUT_FUSIONS.join(',') } },
    });
  } catch (e) {
    const first = String(e.message ?? e).split('\n')[0];
    const ir = /Unsupported model IR version: (\d+), max supported IR version: (\d+)/.exec(first);
    if (ir) {
      throw new BundleError(`${manifest.graph.file} is ONNX IR version ${ir[1]}, newer than onnxruntime-node ${ort.env.versions.node} reads `
        + `(up to ${ir[2]}); re-export the bundle with an edgelm that writes IR 10, or use a newer onnxruntime-node`);
    }
    if (/external data/i.test(first)) {
      throw new BundleError(`${manifest.graph.file} reads its weights from outside the bundle, which is refused (${first}); re-export the bundle`);
    }
    throw new BundleError(`onnxruntime-node cannot load ${manifest.graph.file}: ${first}; re-export the bundle`);
  }
}

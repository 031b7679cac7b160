/**
 * Manifest and file checks on every bundle, and tampering: a copy of the smallest bundle
 * with its manifest edited (refused by the seal), a byte of tokenizer.json changed (refused by
 * its checksum), and names or versions a reader must refuse.
 */

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test, { after } from 'node:test';

import { BundleError, checkFiles, readManifest } from '../src/index.js';
import { bundlesOrFail, folderBytes } from '../testkit/bundles.js';

const bundles = bundlesOrFail();

for (const folder of bundles) {
  test(`${folder}: manifest is accepted and every listed file matches its size and sha256`, async () => {
    const manifest = readManifest(folder);
    await checkFiles(folder, manifest);
    for (const name of [manifest.graph.file, manifest.tokenizer.file, manifest.tokenizer.chat_template, manifest.conformance]) {
      if (name) assert.ok(name in manifest.files, `${name} is listed in files`);
    }
    assert.ok(manifest.conformance, 'the manifest names conformance.json (bundles of edgelm 0.3 and later carry it)');
  });
}

if (bundles.length) {
  const sealed = bundles.filter((b) => existsSync(path.join(b, 'manifest.sha256')));
  const smallest = (list) => [...list].sort((a, b) => folderBytes(a) - folderBytes(b))[0];
  const scratch = mkdtempSync(path.join(tmpdir(), 'edgelm-node-'));
  after(() => rmSync(scratch, { recursive: true, force: true }));

  /** A fresh copy of SOURCE under the scratch folder. */
  const copyOf = (source, name) => {
    const copy = path.join(scratch, name);
    cpSync(source, copy, { recursive: true });
    return copy;
  };
  /** Rewrite COPY's manifest with EDIT applied, and seal it again (a deliberate edit). */
  const editAndReseal = (copy, edit) => {
    const manifestPath = path.join(copy, 'manifest.json');
    const data = JSON.parse(readFileSync(manifestPath, 'utf8'));
    edit(data);
    const text = `${JSON.stringify(data, null, 2)}\n`;
    writeFileSync(manifestPath, text);
    writeFileSync(path.join(copy, 'manifest.sha256'), `${createHash('sha256').update(text).digest('hex')}  manifest.json\n`);
  };
  const refused = (fn, pattern) => assert.throws(fn, (e) => e instanceof BundleError && pattern.test(e.message) && !e.message.includes('\n'));

  test('an edited manifest.json is refused by its seal (manifest.sha256)', () => {
    assert.ok(sealed.length, 'one of EDGELM_NODE_BUNDLES must carry manifest.sha256 (edgelm 0.3 and later write it)');
    const copy = copyOf(smallest(sealed), 'edited');
    const manifestPath = path.join(copy, 'manifest.json');
    const data = JSON.parse(readFileSync(manifestPath, 'utf8'));
    data.max_context += 1;
    writeFileSync(manifestPath, `${JSON.stringify(data, null, 2)}\n`);
    refused(() => readManifest(copy), /does not match manifest\.sha256/);
  });

  test('a changed byte of tokenizer.json is refused by its checksum', async () => {
    const copy = copyOf(smallest(bundles), 'tokenizer-byte');
    const manifest = readManifest(copy);
    const tokenizerPath = path.join(copy, manifest.tokenizer.file);
    const bytes = readFileSync(tokenizerPath);
    bytes[Math.floor(bytes.length / 2)] ^= 0x01;
    writeFileSync(tokenizerPath, bytes);
    await assert.rejects(checkFiles(copy, manifest), (e) => e instanceof BundleError && e.message.includes(`${manifest.tokenizer.file} does not match its sha256`));
  });

  test('a missing or resized file is named', async () => {
    const copy = copyOf(smallest(bundles), 'resized');
    const manifest = readManifest(copy);
    writeFileSync(path.join(copy, manifest.tokenizer.file), '{}');
    rmSync(path.join(copy, manifest.graph.file));
    await assert.rejects(checkFiles(copy, manifest), (e) => e instanceof BundleError
      && e.message.includes(`${manifest.graph.file} is missing`) && e.message.includes(`${manifest.tokenizer.file} has 2 bytes`));
  });

  test('format_version missing, not an integer, or newer than 2 is refused', () => {
    const cases = [[(d) => { delete d.format_version; }, /no integer format_version/],
      [(d) => { d.format_version = '2'; }, /no integer format_version/],
      [(d) => { d.format_version = 2.5; }, /no integer format_version/],
      [(d) => { d.format_version = 3; }, /format_version 3 is newer than this reader knows \(2\)/]];
    cases.forEach(([edit, pattern], i) => {
      const copy = copyOf(smallest(bundles), `version-${i}`);
      editAndReseal(copy, edit);
      refused(() => readManifest(copy), pattern);
    });
    const copy = copyOf(smallest(bundles), 'version-float-text');
    const manifestPath = path.join(copy, 'manifest.json');
    const text = readFileSync(manifestPath, 'utf8').replace(/"format_version":\s*2/, '"format_version": 2.0');
    writeFileSync(manifestPath, text);
    writeFileSync(path.join(copy, 'manifest.sha256'), `${createHash('sha256').update(text).digest('hex')}  manifest.json\n`);
    refused(() => readManifest(copy), /no integer format_version/);
  });

  test('file names that leave the bundle, or are not listed in files, are refused', () => {
    const unsafe = [
      [(d) => { d.tokenizer.file = '../tokenizer.json'; }, /without '\.\.'/],
      [(d) => { d.tokenizer.file = '/etc/passwd'; }, /relative paths inside the bundle/],
      [(d) => { d.graph.file = 'sub\\model.onnx'; }, /relative paths inside the bundle/],
      [(d) => { d.files['../x'] = { sha256: '0'.repeat(64), bytes: 0 }; }, /files\["\.\.\/x"\]/],
      [(d) => { delete d.files[d.tokenizer.file]; }, /is not listed in files/],
      [(d) => { d.conformance = 'other.json'; }, /conformance "other\.json" is not listed in files/],
    ];
    unsafe.forEach(([edit, pattern], i) => {
      const copy = copyOf(smallest(bundles), `names-${i}`);
      editAndReseal(copy, edit);
      refused(() => readManifest(copy), pattern);
    });
    const copy = copyOf(smallest(bundles), 'symlink');
    const outside = path.join(scratch, 'outside.json');
    writeFileSync(outside, '{}');
    symlinkSync(outside, path.join(copy, 'linked.json'));
    editAndReseal(copy, (d) => { d.files['linked.json'] = { sha256: '0'.repeat(64), bytes: 2 }; });
    refused(() => readManifest(copy), /is a link to .*outside the bundle/);
  });

  test('a field of the wrong type is named', () => {
    const copy = copyOf(smallest(bundles), 'wrong-type');
    editAndReseal(copy, (d) => { d.max_context = 'long'; delete d.graph.inputs; });
    refused(() => readManifest(copy), /field graph\.inputs is missing; field max_context must be a whole number >= 1/);
  });

  test('a default_prompt that is not one of the prompts, or prompts that are not strings, are refused', () => {
    const missing = copyOf(smallest(bundles), 'default-prompt');
    editAndReseal(missing, (d) => { d.prompts = { query: 'query: ' }; d.default_prompt = 'title'; });
    refused(() => readManifest(missing), /field default_prompt "title" is not one of its prompts \(query\)/);
    const wrong = copyOf(smallest(bundles), 'prompt-type');
    editAndReseal(wrong, (d) => { d.prompts = { query: 3 }; });
    refused(() => readManifest(wrong), /field prompts must be an object of strings/);
  });

  test('a folder that is not a bundle says what to do', () => {
    refused(() => readManifest(path.join(scratch, 'absent')), /does not exist; pass the folder that `edgelm export` wrote/);
    refused(() => readManifest(scratch), /has no manifest\.json; it is not an edgelm bundle/);
  });
}

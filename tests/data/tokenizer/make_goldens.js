// Encodes/decodes the corpus with Hugging Face `tokenizers` (npm package "tokenizers", the Rust
// library's Node binding; tested with 0.23.2) and writes the goldens tokenizer_test.cc compares with.
// Usage: NODE_PATH=<dir with node_modules> node make_goldens.js tokenizer.json corpus.bin goldens.bin
// Format (little-endian): "AVTG", u32 num_docs, per document: u32 n, n x i32 ids, u32 m, m bytes of
// the library's decode(ids, skip_special=false).
// Bytes that are not UTF-8 are decoded with replacement first (TextDecoder, like Python's
// errors="replace"): the library itself only accepts strings.
const fs = require('fs');
const path = require('path');
const {Tokenizer} = require('tokenizers');

function gemma4Json(tokenizerPath) {
  const json = JSON.parse(fs.readFileSync(tokenizerPath, 'utf8'));
  const table = JSON.parse(fs.readFileSync(path.join(__dirname, 'gemma4_special_tokens.json'), 'utf8'));
  const vocab = json.model.vocab;
  const byId = new Map(Object.entries(vocab).map(([k, v]) => [v, k]));
  for (const [id, content] of table.tokens) {
    if (byId.has(id)) delete vocab[byId.get(id)];
    vocab[content] = id;
    const entry = json.added_tokens.find((t) => t.id === id);
    if (entry) { entry.content = content; entry.special = true; }
    else json.added_tokens.push({id, content, single_word: false, lstrip: false, rstrip: false,
                                 normalized: false, special: true});
  }
  return JSON.stringify(json);
}

function readCorpus(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString('latin1', 0, 4) !== 'AVCP') throw new Error('bad corpus');
  const n = buf.readUInt32LE(4);
  const docs = [];
  let off = 8;
  for (let i = 0; i < n; ++i) {
    const len = buf.readUInt32LE(off); off += 4;
    docs.push(buf.subarray(off, off + len)); off += len;
  }
  return docs;
}

module.exports = {gemma4Json, readCorpus};

async function main() {
  const [tokPath, corpusPath, outPath] = process.argv.slice(2);
  const tok = Tokenizer.fromString(gemma4Json(tokPath));
  const docs = readCorpus(corpusPath);
  const decoder = new TextDecoder('utf-8');
  const parts = [Buffer.from('AVTG', 'latin1'), u32(docs.length)];
  let tokens = 0;
  for (const doc of docs) {
    const enc = await tok.encode(decoder.decode(doc), null, {addSpecialTokens: false});
    const ids = enc.getIds();
    tokens += ids.length;
    const idBuf = Buffer.alloc(4 * ids.length);
    ids.forEach((id, i) => idBuf.writeInt32LE(id, 4 * i));
    const text = Buffer.from(await tok.decode(ids, false), 'utf8');
    parts.push(u32(ids.length), idBuf, u32(text.length), text);
  }
  fs.writeFileSync(outPath, Buffer.concat(parts));
  console.log(`${docs.length} documents, ${tokens} tokens`);
}

function u32(v) { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; }

if (require.main === module) main().catch((e) => { console.error(e); process.exit(1); });

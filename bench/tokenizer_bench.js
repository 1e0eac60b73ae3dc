// The `tokenizers` library (npm binding of the Rust crate) on the same corpus as tokenizer_bench.cc:
// load time and single-document-at-a-time encode throughput (best of N passes), plus encodeBatch.
//   NODE_PATH=<dir>/node_modules node bench/tokenizer_bench.js tokenizer.json corpus.bin [passes]
const {Tokenizer} = require('tokenizers');
const {readCorpus} = require('../tests/data/tokenizer/make_goldens.js');

async function main() {
  const [tokPath, corpusPath, passesArg] = process.argv.slice(2);
  const passes = Number(passesArg || 5);
  let t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();  // CPU time: robust to a busy shared machine
  const tok = Tokenizer.fromFile(tokPath);
  const loadS = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const loadCpuS = (cpu.user + cpu.system) / 1e6;
  const decoder = new TextDecoder('utf-8');
  const docs = readCorpus(corpusPath).map((d) => decoder.decode(d));
  const bytes = docs.reduce((n, d) => n + Buffer.byteLength(d), 0);
  let best = 1e9, bestCpu = 1e9, bestBatch = 1e9, tokens = 0;
  for (let p = 0; p < passes; ++p) {
    tokens = 0;
    t0 = process.hrtime.bigint();
    const passCpu = process.cpuUsage();
    for (const d of docs) tokens += (await tok.encode(d, null, {addSpecialTokens: false})).getIds().length;
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
    const c = process.cpuUsage(passCpu);
    bestCpu = Math.min(bestCpu, (c.user + c.system) / 1e6);
    t0 = process.hrtime.bigint();
    await tok.encodeBatch(docs, {addSpecialTokens: false});
    bestBatch = Math.min(bestBatch, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  console.log(`tokenizers load ${loadS.toFixed(3)} s (cpu ${loadCpuS.toFixed(3)} s)  encode ${docs.length} docs ${(bytes / 1e6).toFixed(2)} MB ` +
              `${tokens} tokens: best ${best.toFixed(4)} s (cpu ${bestCpu.toFixed(4)} s) = ${(bytes / 1e6 / best).toFixed(2)} MB/s, ` +
              `${(tokens / 1e3 / best).toFixed(0)} ktok/s; encodeBatch (all cores) ${bestBatch.toFixed(4)} s`);
}
main().catch((e) => { console.error(e); process.exit(1); });

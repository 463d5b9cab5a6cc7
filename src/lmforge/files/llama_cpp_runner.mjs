// Runs a GGUF in the real llama.cpp (the prebuilt CPU build node-llama-cpp ships) for lmforge.files.llama_cpp.
// Reads one JSON request on stdin, writes one JSON answer on stdout:
//   {"model": path, "prompts": [text], "max_tokens": n, "stop": [id], "sequences": [[id]], "threads": n}
//   -> {"prompts": [{"tokens": [id], "generated": [id], "text": str, "decode_seconds": s}],
//       "sequences": [{"top1": [id]}], "system": str}
// "tokens" is llama.cpp's own tokenization of the prompt text (special tokens parsed, no BOS added unless the
// GGUF asks for one); "generated" is greedy (temperature 0); "top1" is the greedy next token after each prefix.
// node-llama-cpp is imported from the folder lmforge found it in (LMFORGE_NODE_LLAMA_CPP_ENTRY, a file URL).
const {getLlama, LlamaLogLevel} = await import(process.env.LMFORGE_NODE_LLAMA_CPP_ENTRY);

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: request.threads ?? 2});
const model = await llama.loadModel({modelPath: request.model, gpuLayers: 0});
const context = await model.createContext({contextSize: request.context ?? 512, batchSize: 512, threads: request.threads ?? 2});
const sequence = context.getSequence();
const stop = new Set(request.stop ?? []);
const answer = {prompts: [], sequences: [], system: llama.systemInfo};

for (const text of request.prompts ?? []) {
    await sequence.clearHistory();
    const tokens = model.tokenize(text, true);
    const generated = [];
    const started = process.hrtime.bigint();
    let first = null;
    for await (const token of sequence.evaluate(tokens, {temperature: 0})) {
        if (first === null) first = process.hrtime.bigint();
        if (stop.has(token)) break;
        generated.push(token);
        if (generated.length >= (request.max_tokens ?? 16)) break;
    }
    const ended = process.hrtime.bigint();
    answer.prompts.push({
        tokens: Array.from(tokens), generated: Array.from(generated), text: model.detokenize(generated, true),
        // decode time: from the first generated token (the prompt is processed by then) to the last
        decode_seconds: first === null ? 0 : Number(ended - first) / 1e9, decode_tokens: Math.max(0, generated.length - 1),
    });
}
for (const ids of request.sequences ?? []) {
    await sequence.clearHistory();
    const items = ids.map((id) => [id, {generateNext: {token: true, options: {temperature: 0}}}]);
    const results = await sequence.controlledEvaluate(items);
    answer.sequences.push({top1: results.map((result) => result?.next?.token ?? null)});
}
await context.dispose();
await model.dispose();
await llama.dispose();
process.stdout.write(JSON.stringify(answer));

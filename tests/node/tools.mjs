// The official Node.js `openai` package against the daemon: a tool call streamed (raw
// deltas reassembled by hand, and the package's own `stream` helper's final message), both
// equal to the whole answer. Usage: node tools.mjs BASE_URL MODEL_ID; prints one JSON
// document for the Rust test.
import OpenAI from "openai";

const [base, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "none", maxRetries: 0 });
const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Get the current weather in a city.",
      parameters: {
        type: "object",
        properties: { city: { type: "string" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
        required: ["city", "unit"],
      },
    },
  },
];
const request = {
  model,
  messages: [{ role: "user", content: "Weather in Lisbon, please." }],
  tools,
  tool_choice: { type: "function", function: { name: "get_weather" } },
  temperature: 0,
  max_tokens: 64,
};

const whole = await client.chat.completions.create(request);
const raw = { name: null, id: null, args: "", finish: null, chunks: 0 };
for await (const chunk of await client.chat.completions.create({ ...request, stream: true })) {
  for (const c of chunk.choices) {
    for (const d of c.delta.tool_calls ?? []) {
      raw.chunks += 1;
      raw.id ??= d.id ?? null;
      raw.name ??= d.function?.name ?? null;
      raw.args += d.function?.arguments ?? "";
    }
    raw.finish = c.finish_reason ?? raw.finish;
  }
}
const helper = await client.chat.completions.stream(request).finalChatCompletion();
const call = (m) => (m.tool_calls ?? []).map((t) => [t.function.name, t.function.arguments]);
let parsedArgs = null;
try {
  parsedArgs = JSON.parse(raw.args);
} catch (e) {
  parsedArgs = String(e);
}
console.log(
  JSON.stringify({
    whole: call(whole.choices[0].message),
    whole_finish: whole.choices[0].finish_reason,
    raw,
    raw_args: parsedArgs,
    helper: call(helper.choices[0].message),
    helper_finish: helper.choices[0].finish_reason,
  }),
);

// Validate an AsyncAPI document with the official parser (@asyncapi/parser, the one the
// AsyncAPI CLI and Studio use): reads the document (JSON) on stdin, prints its
// diagnostics as a JSON array of {severity, code, message, path}; severity is
// "error", "warning", "information" or "hint". Exits 0 either way: the caller judges.
//
//   node tests/node/asyncapi_validate.mjs < docs/asyncapi.json
import { createRequire } from "node:module";

const require = createRequire(new URL("../../clients/js/package.json", import.meta.url));
const { Parser } = require("@asyncapi/parser");

const SEVERITIES = ["error", "warning", "information", "hint"];

let text = "";
for await (const chunk of process.stdin) text += chunk;

const diagnostics = await new Parser().validate(text);
const out = diagnostics.map((d) => ({
  severity: SEVERITIES[d.severity] ?? String(d.severity),
  code: String(d.code),
  message: d.message,
  path: d.path.join("/"),
}));
console.log(JSON.stringify(out));

// Validates AsyncAPI documents against the official AsyncAPI JSON Schema of their version
// (the @asyncapi/specs package, pinned in package.json), with Ajv.
//
// Usage: node validate_asyncapi.mjs FILE.json [FILE.json ...]
// Prints one JSON object: {"FILE": [] when valid, else the errors (path and message)}.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import Ajv from "ajv";
import addFormats from "ajv-formats";

const require = createRequire(import.meta.url);
const specs = require("@asyncapi/specs");

// The bundled schemas embed the JSON Schema draft-07 meta-schema, which Ajv already has.
const ajv = new Ajv({ allErrors: true, strict: false, validateSchema: false, meta: false });
addFormats(ajv);
const validators = {};

function validatorFor(version) {
  if (!(version in validators)) {
    const schema = specs.schemas[version];
    if (!schema) throw new Error(`no AsyncAPI schema for version ${version}`);
    validators[version] = ajv.compile(schema);
  }
  return validators[version];
}

const result = {};
for (const file of process.argv.slice(2)) {
  const document = JSON.parse(readFileSync(file, "utf8"));
  const validate = validatorFor(document.asyncapi);
  result[file] = validate(document)
    ? []
    : validate.errors.map((e) => `${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
}
console.log(JSON.stringify(result));

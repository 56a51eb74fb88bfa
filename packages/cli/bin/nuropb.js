#!/usr/bin/env node
// The `nuropb` command as npm links it. This file is committed, so npm can link it as soon as
// `npm ci` runs in a clone; the program it starts is compiled into dist/ by `npm run build`.
import { existsSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";

const main = new URL("../dist/main.js", import.meta.url);
const notBuilt = (detail) => {
  process.stderr.write(
    `nuropb: the CLI is not built (${detail}): run npm run build first (in the repository root)\n`,
  );
  process.exit(1);
};

if (!existsSync(fileURLToPath(main))) notBuilt(`${fileURLToPath(main)} is missing`);
try {
  await import(main.href);
} catch (err) {
  // dist/main.js is there but a workspace package it imports was not built (its dist/ is missing).
  if (err?.code === "ERR_MODULE_NOT_FOUND" && String(err.message).includes("/dist/")) {
    notBuilt(err.message);
  }
  throw err;
}

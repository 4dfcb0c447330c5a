// Writes a .gz twin of every compressible file in dist/ so the server can send precompressed bytes.
import { readdirSync, readFileSync, writeFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { gzipSync, constants } from "node:zlib";

const root = new URL("../dist/", import.meta.url).pathname;
let total = 0;
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (/\.(js|css|html|svg|json|txt|map)$/.test(name)) {
      const gz = gzipSync(readFileSync(p), { level: constants.Z_BEST_COMPRESSION });
      writeFileSync(p + ".gz", gz);
      total += gz.length;
    }
  }
}
walk(root);
console.log(`portal assets: ${(total / 1024).toFixed(1)} kB gzipped`);

// The log-in page's ?next= check: same-origin paths pass, everything a browser would send
// elsewhere falls back to "/".
import assert from "node:assert/strict";
import { test } from "node:test";

import { safeNextPath } from "../src/js/next-url.js";

const origin = "https://mriannot.example.org";

test("paths on this site are kept, with query and fragment", () => {
  assert.equal(safeNextPath("/annotate/12/", origin), "/annotate/12/");
  assert.equal(safeNextPath("/dashboard/3/?tab=agreement#top", origin), "/dashboard/3/?tab=agreement#top");
  assert.equal(safeNextPath("/%5Cpath-with-an-encoded-backslash", origin), "/%5Cpath-with-an-encoded-backslash");
});

test("anything that leaves the site goes to the worklist instead", () => {
  for (const raw of [
    "//evil.example/",
    "/\\evil.example/",
    "/\\\\evil.example/",
    "/\t/evil.example/",
    "/\n/evil.example/",
    "\t//evil.example/",
    "https://evil.example/",
    "javascript:alert(1)",
    "evil.example",
    "",
    null,
  ]) {
    assert.equal(safeNextPath(raw, origin), "/", JSON.stringify(raw));
  }
});

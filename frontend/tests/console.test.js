// Unit tests of the lead pages' pure helpers: where a user lands after logging in, and the
// number key of a label (node --test frontend/tests/; also run by pytest).
import assert from "node:assert/strict";
import { test } from "node:test";

import { landingPath } from "../src/js/next-url.js";
import { labelKey } from "../src/js/palette.js";

const member = (project, role) => ({ project, role });

test("a rater lands on the worklist, even one who also leads a project", () => {
  assert.equal(landingPath({ is_site_admin: false, memberships: [member(1, "annotator")] }), "/");
  assert.equal(landingPath({ is_site_admin: false, memberships: [member(1, "lead"), member(2, "annotator")] }), "/");
  assert.equal(landingPath({ is_site_admin: true, memberships: [member(2, "annotator")] }), "/");
});

test("a lead who rates nothing lands on their one project's home, or on the projects page", () => {
  assert.equal(landingPath({ is_site_admin: false, memberships: [member(7, "lead")] }), "/projects/7/");
  assert.equal(landingPath({ is_site_admin: false, memberships: [member(7, "admin")] }), "/projects/7/");
  assert.equal(landingPath({ is_site_admin: false, memberships: [member(7, "lead"), member(8, "admin")] }), "/projects/");
});

test("a site admin lands on the projects page; a user with no project on the worklist", () => {
  assert.equal(landingPath({ is_site_admin: true, memberships: [] }), "/projects/");
  assert.equal(landingPath({ is_site_admin: true, memberships: [member(7, "lead")] }), "/projects/");
  assert.equal(landingPath({ is_site_admin: false, memberships: [] }), "/");
  assert.equal(landingPath(null), "/");
});

test("a label's key is the schema's own; a schema without keys numbers them by position", () => {
  assert.equal(labelKey({ value: 4, key: 1 }, 2), 1);
  assert.equal(labelKey({ value: 4, key: null }, 0), null); // the 10th label and after have none
  assert.equal(labelKey({ value: 4 }, 0), 1);
  assert.equal(labelKey({ value: 4 }, 8), 9);
  assert.equal(labelKey({ value: 4 }, 9), null);
});

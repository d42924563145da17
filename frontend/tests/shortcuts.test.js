import assert from "node:assert/strict";
import { test } from "node:test";

import { displayKey, keyName } from "../src/js/shortcuts.js";

const key = (k, mods = {}) => ({ key: k, ctrlKey: false, metaKey: false, altKey: false, shiftKey: false, ...mods });

test("key names: letters lower-case with Shift, symbols as typed, Ctrl for Cmd too", () => {
  assert.equal(keyName(key("z", { ctrlKey: true })), "Ctrl+z");
  assert.equal(keyName(key("Z", { ctrlKey: true, shiftKey: true })), "Ctrl+Shift+z");
  assert.equal(keyName(key("z", { metaKey: true })), "Ctrl+z");
  assert.equal(keyName(key("F", { shiftKey: true })), "Shift+f");
  assert.equal(keyName(key("?", { shiftKey: true })), "?");
  assert.equal(keyName(key("3")), "3");
  assert.equal(keyName(key("ArrowUp")), "ArrowUp");
  assert.equal(keyName(key("Enter", { ctrlKey: true })), "Ctrl+Enter");
});

test("keys are shown the way people read them", () => {
  assert.equal(displayKey("Ctrl+Shift+z"), "Ctrl + Shift + Z");
  assert.equal(displayKey("ArrowDown"), "↓");
  assert.equal(displayKey("?"), "?");
});

"""Editing effort: interactions and time to Dice 0.90 with the brush alone and with the new tools.

A scripted annotator drives the real viewer page (/annotate/<id>/) in headless Chromium,
against the app's own local server on a throwaway database, to segment two structures of a
SIMULATED scan whose truth is known:

(a) one white-matter lesion of about 10 mm (label Lesion);
(b) the lateral ventricles (label CSF): the simulation's labels are CSF / grey / white matter /
    lesion, and the ventricles are the CSF component (6-connected) around the midline point
    (0, -12, 14) mm of the template (the lateral ventricles, with the third ventricle when it
    touches them).

The scan is a 104 x 120 x 64 box of a 1 mm subject simulated from the MNI152 2009a template
(``simulation.simulate_subject``, one lesion; the seed is the first from 100 whose lesion is
9-11 mm across and lies 12 mm or more from the box's faces).

Each structure is segmented twice, in a fresh assignment, in the axial view:

- **brush**: the brush and eraser only (B, E, ``[``/``]`` and strokes);
- **tools**: the new tools first (fill in 3D with its automatic range, the range on the
  histogram, threshold painting as a mask, the server's margin, fill in a slice; keyed as the
  help lists them), then the same brush as the fallback for what is left.

An interaction is one key press (tools, labels, brush size, slice up/down, accept, undo), one
click, or one stroke (button down, drag, up). Dice against the truth is measured in the page
after every interaction (on the accepted labels, not a pending preview); a run stops at Dice
0.90 or at the budget. Time is the wall-clock time of the run on this machine (headless
software GL): machine time, not a person's.

The scripted policy is a proxy for a person, not a person. It knows the truth (as a
radiologist sees the structure) and places every stroke on voxel centres; it never misses.

- brush: slice by slice through the structure (from its lowest axial slice up), it paints
  horizontal strokes chosen greedily: among the strokes along each row of the slice with every
  brush size, the one that adds the most truth voxels minus spilled voxels per interaction (a
  size change costs its key presses), until the slice's own Dice reaches 0.93 or no stroke
  gains; an eraser stroke when it gains more. It moves to the next slice with the arrow keys
  (a slice more than 3 away: C, a click in the coronal view, A).
- tools: at the structure's deepest voxel (the one farthest from its surface) it fills in 3D
  (Shift+F, the label's key, a click) with the automatic range; if that leaks (Dice drops) it
  undoes. If Dice is under 0.90 it drags the range's far end on the histogram to half-way
  between the structure's and its surroundings' median intensities (what a reader sees) and
  fills again (undone if it leaks; the range is kept); turns threshold painting on (T) and
  grows by the 1 mm margin within the range (>, server) while that helps; fills in a slice (F)
  at the deepest missing voxel of every piece of the truth in a slice that misses a fifth of
  it, until three fills in a row add nothing; each edit that does not raise Dice is undone
  (Ctrl+Z). Then threshold painting off (T) and the brush policy above finishes.

Usage:  .venv/bin/python bench/bench_editing_effort.py [--budget 3000] [--structures lesion,ventricles]
        [--methods brush,tools]
Prints a table and writes bench/out/bench_editing_effort.json.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PYTHON = sys.executable
sys.path.insert(0, str(ROOT))
from bench.bench_viewer import build_frontend, free_port, logged_in_context, start_server
from tests.frontend.conftest import CHROMIUM, CHROMIUM_ARGS

TARGET_DICE = 0.90
SLICE_DICE = 0.93  # the brush policy leaves a slice once it is this good
BOX = (104, 120, 64)
BOX_CENTRE_MM = (0.0, -12.0, 14.0)
LABELS = [
    {"value": 1, "name": "CSF", "color": "#3366ff"},
    {"value": 2, "name": "Grey matter", "color": "#22aa55"},
    {"value": 3, "name": "White matter", "color": "#eeeeee"},
    {"value": 4, "name": "Lesion", "color": "#ff5500"},
]
LABEL_KEY = {1: "1", 2: "2", 3: "3", 4: "4"}
SIZE_STEPS = [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50]  # brush.js, in voxels
USERS = ("brush", "tools")
PASSWORD = "bench-password-1"

PAGE_HELPERS = """
(() => {
  const app = window.mriannot;
  window.bench = {
    truth: null,
    setTruth(b64) {
      const raw = atob(b64);
      const truth = new Uint8Array(raw.length);
      for (let i = 0; i < raw.length; i++) truth[i] = raw.charCodeAt(i);
      this.truth = truth;
      return truth.length;
    },
    dice(label) {
      const labels = app.tools.committedBitmap() ?? app.viewer.bitmap;
      const truth = this.truth;
      let both = 0, a = 0, b = 0;
      for (let i = 0; i < truth.length; i++) {
        const x = labels[i] === label, y = truth[i] === 1;
        if (x) a++;
        if (y) b++;
        if (x && y) both++;
      }
      this.last = { precision: a ? both / a : 1, recall: b ? both / b : 1 };
      return a + b ? (2 * both) / (a + b) : 1;
    },
    xy(v) {
      const nv = app.viewer.nv;
      const p = nv.frac2canvasPos(nv.vox2frac(v));
      if (!p) return null;
      const r = nv.canvas.getBoundingClientRect();
      const d = nv.uiData.dpr || 1;
      return [r.left + p[0] / d, r.top + p[1] / d];
    },
    slice(z, label) {
      const [nx, ny] = app.viewer.dims;
      const labels = app.viewer.bitmap;
      const out = new Array(nx * ny);
      for (let i = 0; i < nx * ny; i++) {
        const v = labels[i + z * nx * ny];
        out[i] = v === label ? 1 : v ? 2 : 0;
      }
      return out;
    },
  };
  return true;
})()
"""


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


# --------------------------------------------------------------------------------- data


def simulated_box(first_seed: int = 100):
    """The 1 mm box and the first subject from ``first_seed`` with a 9-11 mm lesion inside it."""
    import simulation
    from simulation.anatomy import Anatomy

    anatomy = simulation.mni152_anatomy(resolution=1)
    affine = np.asarray(anatomy.affine)
    centre = np.round(np.linalg.inv(affine) @ [*BOX_CENTRE_MM, 1])[:3].astype(int)
    lo = centre - np.array(BOX) // 2
    box = tuple(slice(int(a), int(a) + s) for a, s in zip(lo, BOX, strict=True))
    shift = np.eye(4)
    shift[:3, 3] = lo
    crop = Anatomy(
        t1=np.ascontiguousarray(anatomy.t1[box]),
        labels=np.ascontiguousarray(np.asarray(anatomy.labels)[box]),
        affine=affine @ shift,
    )
    for seed in range(first_seed, first_seed + 200):
        subject = simulation.simulate_subject(crop, seed=seed, n_lesions=1)
        lesions = subject.parameters["lesions"]
        if not lesions:
            continue
        diameter = 2 * float(np.prod(lesions[0]["semi_axes_mm"])) ** (1 / 3)
        centre_vox = np.array(lesions[0]["centre_voxel"])
        margin = min(centre_vox.min(), (np.array(BOX) - 1 - centre_vox).min())
        if 9.0 <= diameter <= 11.0 and margin >= 12:
            return subject, diameter
    raise RuntimeError("no subject with a 9-11 mm lesion inside the box")


def ventricles(subject) -> np.ndarray:
    from scipy import ndimage

    csf = subject.labels == 1
    pieces, _ = ndimage.label(csf)
    inv = np.linalg.inv(subject.affine)
    grid = np.indices(csf.shape)
    point = (inv @ [*BOX_CENTRE_MM, 1])[:3]
    near = sum((grid[k] - point[k]) ** 2 for k in range(3)) <= 20.0**2
    counts = np.bincount(pieces[near & csf])
    counts[0] = 0
    return pieces == int(np.argmax(counts))


def make_data(subject) -> dict:
    """A project (CSF, grey, white, lesion), the subject's scan uploaded twice, two annotators."""
    import django

    django.setup()
    import nibabel as nib
    from django.contrib.auth import get_user_model

    from labeling import services
    from labeling.models import Assignment, Role

    User = get_user_model()
    lead = User.objects.create_user("bench-lead", password=PASSWORD)
    users = {name: User.objects.create_user(f"bench-{name}", password=PASSWORD) for name in USERS}
    project = services.project_create(actor=lead, name="Editing effort", raters_per_scan=2, labels=LABELS)
    for user in users.values():
        services.membership_set(project=project, actor=lead, user=user, role=Role.ANNOTATOR)
    scans = {}
    for index, structure in enumerate(("lesion", "ventricles")):
        image = subject.image.astype(np.float32)
        image[0, 0, 0] += index * 1e-3  # the same scan twice: the server refuses an identical upload
        raw = gzip.compress(nib.Nifti1Image(image, subject.affine).to_bytes(), 1)
        scan = services.scan_create(
            project=project, actor=lead, raw=raw, filename=f"{structure}.nii.gz", subject_id=structure
        )
        scans[structure] = scan
    return {
        (structure, name): Assignment.objects.get(scan=scans[structure], annotator=users[name]).pk
        for structure in scans
        for name in USERS
    }


# --------------------------------------------------------------------------------- the annotator


class Stop(Exception):
    """The run reached the target Dice or its budget."""


@dataclass
class Run:
    structure: str
    method: str
    label: int
    budget: int
    rows: list = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    reached: int | None = None
    reached_s: float | None = None


class Annotator:
    def __init__(self, page, run: Run, truth: np.ndarray, image: np.ndarray):
        self.page = page
        self.image = image
        self.run = run
        self.truth = truth
        self.label = run.label
        self.dice = 0.0
        self.size = 1  # brush size in voxels as the page has it
        self.tool = "navigate"

    # interactions ---------------------------------------------------------------------
    def after(self, kind: str, detail: str = "") -> float:
        self.dice = float(self.page.evaluate(f"window.bench.dice({self.label})"))
        elapsed = time.perf_counter() - self.run.started
        self.run.rows.append(
            {
                "n": len(self.run.rows) + 1,
                "kind": kind,
                "detail": detail,
                "dice": round(self.dice, 4),
                **{k: round(v, 4) for k, v in self.page.evaluate("window.bench.last").items()},
                "s": round(elapsed, 2),
            }
        )
        if len(self.run.rows) % 100 == 0:
            log(f"  {self.run.structure}, {self.run.method}: {len(self.run.rows)} interactions, Dice {self.dice:.3f}")
        if self.dice >= TARGET_DICE:
            self.run.reached = len(self.run.rows)
            self.run.reached_s = elapsed
            raise Stop
        if len(self.run.rows) >= self.run.budget:
            raise Stop
        return self.dice

    def key(self, key: str, detail: str = "") -> float:
        self.page.keyboard.press(key)
        self.wait_idle()
        return self.after("key", detail or key)

    def wait_idle(self) -> None:
        for _ in range(600):
            if self.page.evaluate("document.body.dataset.operation !== 'running'"):
                return
            time.sleep(0.05)

    def xy(self, voxel) -> tuple[float, float]:
        point = self.page.evaluate("(v) => window.bench.xy(v)", [int(v) for v in voxel])
        if point is None:
            raise RuntimeError(f"voxel {voxel} is not on the screen")
        return point[0], point[1]

    def click(self, voxel, detail: str = "") -> float:
        self.page.mouse.click(*self.xy(voxel))
        self.wait_idle()
        return self.after("click", detail)

    def stroke(self, a, b, detail: str = "") -> float:
        start, end = self.xy(a), self.xy(b)
        self.page.mouse.move(*start)
        self.page.mouse.down()
        if a != b:
            self.page.mouse.move(*end, steps=max(2, int(abs(b[0] - a[0]) + abs(b[1] - a[1])) // 3))
        self.page.mouse.up()
        return self.after("stroke", detail)

    # state --------------------------------------------------------------------------------
    def slice_index(self) -> int:
        return round(self.page.evaluate("window.mriannot.viewer.crosshairVoxel()[2]"))

    def goto_slice(self, z: int, target=None) -> None:
        """Next slices with the arrow keys; a far one by a click in the coronal view (C, click, A)."""
        current = self.slice_index()
        if abs(z - current) > 3:
            here = self.page.evaluate("window.mriannot.viewer.crosshairVoxel()")
            # a point of the coronal slice shown (the crosshair's y) on the target's axial slice
            point = (target[0] if target is not None else here[0], here[1], z)
            if self.tool != "navigate":
                self.key("Escape", "navigate")
            self.key("c", "coronal view")
            self.click(point, "go to the slice")
            self.key("a", "axial view")
            self.tool = "navigate"
            current = self.slice_index()
        while current != z:
            self.key("ArrowUp" if z > current else "ArrowDown", "slice")
            current = self.slice_index()

    def use_tool(self, key: str, tool: str) -> None:
        if self.tool != tool:
            self.key(key, tool)
            self.tool = tool

    def use_label(self) -> None:
        if self.page.evaluate("window.mriannot.tools.label") != self.label:
            self.key(LABEL_KEY[self.label], "label")
            if self.tool in ("navigate", "eraser"):
                self.tool = "brush"  # a label key selects the brush (tools.js setLabel)

    def set_size(self, voxels: int) -> None:
        while self.size != voxels:
            up = voxels > self.size
            self.key("]" if up else "[", "size")
            self.size = int(self.page.evaluate("window.mriannot.tools.penSize"))

    def history(self) -> int:
        """Edits recorded so far: an action that changed no voxel records none."""
        return int(self.page.evaluate("window.mriannot.tools.history.edits"))

    def try_edit(self, action) -> bool:
        """Do ``action``; undo it (Ctrl+Z) if it recorded an edit that did not raise Dice."""
        before, position = self.dice, self.history()
        after = action()
        if self.history() != position and after <= before:
            self.key("Control+z", "undo")
            return False
        return after > before

    def drag_slider(self, selector: str, value: float) -> float:
        """Move a range slider of the intensity histogram to ``value`` (one drag)."""
        self.page.evaluate(
            """([selector, value]) => {
              const slider = document.querySelector(selector);
              slider.value = String(value);
              slider.dispatchEvent(new Event("input", { bubbles: true }));
            }""",
            [selector, value],
        )
        return self.after("drag", f"range slider to {value:.0f}")

    def drawn_slice(self, z: int) -> np.ndarray:
        nx, ny = self.truth.shape[:2]
        flat = np.asarray(self.page.evaluate(f"window.bench.slice({z}, {self.label})"), dtype=np.uint8)
        return flat.reshape((nx, ny), order="F")


# --------------------------------------------------------------------------------- the brush policy


def disc_rows(size: int) -> list[tuple[int, int]]:
    """(dy, half-width in x) of the page's disc brush of ``size`` voxels at 1 mm (brush.js)."""
    r = size / 2
    r2 = r * r * (1 + 1e-6) + 1e-9
    reach = int(np.floor(r * (1 + 1e-6)))
    rows = []
    for dy in range(-reach, reach + 1):
        rest = r2 - dy * dy
        if rest < 0:
            continue
        rows.append((dy, int(np.floor(np.sqrt(rest)))))
    return rows or [(0, 0)]


def stroke_gain(truth2d, drawn2d, y, x0, x1, size, erase):
    """Truth voxels gained minus spilled (paint), or spill removed minus truth lost (erase)."""
    nx, ny = truth2d.shape
    gain = 0
    for dy, w in disc_rows(size):
        yy = y + dy
        if yy < 0 or yy >= ny:
            continue
        a, b = max(0, x0 - w), min(nx - 1, x1 + w)
        t = truth2d[a : b + 1, yy]
        d = drawn2d[a : b + 1, yy]
        if erase:
            gain += int(((d == 1) & ~t).sum()) - int(((d == 1) & t).sum())
        else:
            gain += int((t & (d != 1)).sum()) - int((~t & (d != 1)).sum())
    return gain


def best_stroke(truth2d, drawn2d, size_now):
    """The stroke with the most gain per interaction: (gain/cost, y, x0, x1, size, erase)."""
    best = None
    todo = truth2d & (drawn2d != 1)
    spill = (drawn2d == 1) & ~truth2d
    for erase, mask in ((False, todo), (True, spill)):
        if not mask.any():
            continue
        for y in np.flatnonzero(mask.any(axis=0)):
            row = mask[:, y]
            xs = np.flatnonzero(row)
            # runs of the row
            breaks = np.flatnonzero(np.diff(xs) > 1)
            starts = np.concatenate([[xs[0]], xs[breaks + 1]])
            ends = np.concatenate([xs[breaks], [xs[-1]]])
            for s, e in zip(starts, ends, strict=True):
                for size in SIZE_STEPS[:10]:
                    w = disc_rows(size)[len(disc_rows(size)) // 2][1]
                    x0, x1 = s + w, e - w
                    if x0 > x1:
                        x0 = x1 = (s + e) // 2
                    gain = stroke_gain(truth2d, drawn2d, y, x0, x1, size, erase)
                    if gain <= 0:
                        continue
                    keys = abs(SIZE_STEPS.index(size) - SIZE_STEPS.index(size_now)) if size_now in SIZE_STEPS else 1
                    tool = 1 if erase else 0
                    score = gain / (1 + keys + tool)
                    if best is None or score > best[0]:
                        best = (score, int(y), int(x0), int(x1), size, erase)
    return best


def brush_policy(ann: Annotator) -> None:
    """Slice by slice from the lowest up: greedy strokes until none gains."""
    truth = ann.truth
    slices = [z for z in range(truth.shape[2]) if truth[:, :, z].any()]
    for z in slices:
        ann.goto_slice(z)
        for _ in range(200):
            drawn = ann.drawn_slice(z)
            t = truth[:, :, z]
            both = int((t & (drawn == 1)).sum())
            if 2 * both / (int(t.sum()) + int((drawn == 1).sum())) >= SLICE_DICE:
                break  # good enough here: a person moves on
            choice = best_stroke(t, drawn, ann.size)
            if choice is None or choice[0] < 1:
                break
            _, y, x0, x1, size, erase = choice
            if erase:
                ann.use_tool("e", "eraser")
            else:
                if ann.tool != "brush":
                    ann.use_tool("b", "brush")
                ann.use_label()
            ann.set_size(size)
            ann.stroke((x0, y, z), (x1, y, z), "erase" if erase else f"paint {size}")


# --------------------------------------------------------------------------------- the tools policy


def deepest(mask: np.ndarray) -> tuple[int, ...]:
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(mask)
    return tuple(int(v) for v in np.unravel_index(np.argmax(depth), mask.shape))


def tools_policy(ann: Annotator) -> None:
    from scipy import ndimage

    truth = ann.truth
    page = ann.page
    # 1. Fill in 3D at the deepest voxel with the automatic range; undo it if it made things worse.
    seed = deepest(truth)
    ann.goto_slice(seed[2], seed)
    ann.use_tool("Shift+F", "fill3d")
    ann.use_label()
    ann.try_edit(lambda: ann.click(seed, "fill 3D"))
    # 2. The fill stopped short of the partial-volume edge: drag the range's far end to half-way
    #    between the structure and what surrounds it (as a reader sees them) and fill again;
    #    undone if that made things worse (it leaked), the range is kept for what follows.
    if ann.dice < TARGET_DICE:
        image = ann.image
        inside = float(np.median(image[truth]))
        shell = ndimage.binary_dilation(truth, iterations=2) & ~truth
        around = float(np.median(image[shell]))
        edge = (inside + around) / 2
        slider = "#range-hi" if around > inside else "#range-lo"
        ann.drag_slider(slider, edge)
        ann.try_edit(lambda: ann.click(seed, "fill 3D, wider"))
    # 3. Grow by the margin (1 mm, server) within that range: threshold painting on (T) masks
    #    every tool to the range; again while it helps (the last one undone when it did not).
    threshold = False
    if 0 < ann.dice < TARGET_DICE:
        ann.key("t", "threshold on")
        threshold = True
        for _ in range(4):
            if not ann.try_edit(lambda: ann.key(">", "grow 1 mm in range")):
                break
    # 4. Fill in a slice (that range) where much of the truth is still uncovered, at the deepest
    #    voxel of each piece of the truth there; undo a fill that made things worse.
    slices = [z for z in range(truth.shape[2]) if truth[:, :, z].any()]
    upwards = [z for z in slices if z >= seed[2]]
    downwards = [z for z in reversed(slices) if z < seed[2]]
    fruitless = 0  # fills in a row that added nothing: after 3 a reader stops trying them
    for z in upwards + downwards:  # from the fill's slice up, then down: one jump
        if fruitless >= 3:
            break
        pieces, count = ndimage.label(truth[:, :, z])
        for k in range(1, count + 1):
            if fruitless >= 3:
                break
            piece = pieces == k
            missing = piece & (ann.drawn_slice(z) != 1)
            if missing.sum() < max(8, 0.2 * piece.sum()):
                continue
            x, y = deepest(missing)  # where the label is missing, as a reader clicks
            ann.goto_slice(z, (x, y, z))
            ann.use_tool("f", "fill2d")
            ann.use_label()
            gained = ann.try_edit(lambda x=x, y=y, z=z: ann.click((x, y, z), "fill slice"))
            fruitless = 0 if gained else fruitless + 1
    if threshold:
        ann.key("t", "threshold off")  # the brush paints everywhere again
    # 5. The brush for what is left.
    ann.tool = page.evaluate("window.mriannot.tools.tool")
    brush_policy(ann)


# --------------------------------------------------------------------------------- main


def run_one(
    browser, base: str, assignment: int, structure: str, method: str, truth: np.ndarray, label: int, budget: int, image
) -> Run:
    context = logged_in_context_for(browser, base, f"bench-{method}")
    page = context.new_page()
    page.goto(f"{base}/annotate/{assignment}/")
    poll(page, "document.body.dataset.ready === 'true'", timeout=180)
    page.keyboard.press("a")  # axial (not counted: the view a reader starts in)
    page.evaluate(PAGE_HELPERS)
    packed = np.ascontiguousarray(truth.astype(np.uint8).ravel(order="F"))
    page.evaluate("(b64) => window.bench.setTruth(b64)", base64.b64encode(packed.tobytes()).decode())
    run = Run(structure=structure, method=method, label=label, budget=budget)
    annotator = Annotator(page, run, truth, image)
    try:
        (brush_policy if method == "brush" else tools_policy)(annotator)
    except Stop:
        pass
    run.final_dice = annotator.dice
    run.total_s = time.perf_counter() - run.started
    context.close()
    return run


def poll(page, expression: str, timeout: float = 60) -> None:
    """Wait until ``expression`` holds in the page (the CSP forbids wait_for_function's eval)."""
    deadline = time.time() + timeout
    while not page.evaluate(expression):
        if time.time() > deadline:
            raise TimeoutError(f"{expression} did not hold within {timeout} s")
        time.sleep(0.1)


def logged_in_context_for(browser, base: str, username: str):
    import bench.bench_viewer as viewer_bench

    saved = viewer_bench.USER
    viewer_bench.USER = username
    try:
        return logged_in_context(browser, base, autosave_ms=1000)
    finally:
        viewer_bench.USER = saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=int, default=3000, help="interactions per run at most (default 3000)")
    parser.add_argument("--first-seed", type=int, default=100, help="first simulation seed tried (default 100)")
    parser.add_argument("--structures", default="lesion,ventricles", help="which structures (default both)")
    parser.add_argument("--methods", default="brush,tools", help="which methods (default both)")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    import bench.bench_viewer as viewer_bench

    viewer_bench.PASSWORD = PASSWORD
    OUT.mkdir(parents=True, exist_ok=True)
    build_frontend()
    log("simulating the subject (1 mm box)")
    subject, diameter = simulated_box(args.first_seed)
    truths = {"lesion": subject.labels == 4, "ventricles": ventricles(subject)}
    labels = {"lesion": 4, "ventricles": 1}
    voxel_ml = float(abs(np.linalg.det(subject.affine[:3, :3]))) / 1000
    for name, mask in truths.items():
        log(f"{name}: {int(mask.sum())} voxels ({mask.sum() * voxel_ml:.2f} mL)")

    data_dir = Path(tempfile.mkdtemp(prefix="mriannot-bench-"))
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "mriannot.settings",
            "DJANGO_DEBUG": "true",
            "MRIANNOT_DATA_DIR": str(data_dir),
            "DJANGO_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.pop("DATABASE_URL", None)
    from mriannot.localredis import start_redis

    redis = start_redis(env=env)
    env["REDIS_URL"] = redis.url
    os.environ.update(
        {
            k: env[k]
            for k in ("DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG", "MRIANNOT_DATA_DIR", "DJANGO_LOG_LEVEL", "REDIS_URL")
        }
    )
    server = None
    runs: list[Run] = []
    try:
        subprocess.run(
            [PYTHON, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True
        )
        assignments = make_data(subject)
        port = free_port()
        server = start_server(env, port)
        base = f"http://127.0.0.1:{port}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for structure in args.structures.split(","):
                for method in args.methods.split(","):
                    log(f"{structure}, {method}: running")
                    run = run_one(
                        browser,
                        base,
                        assignments[(structure, method)],
                        structure,
                        method,
                        truths[structure],
                        labels[structure],
                        args.budget,
                        subject.image,
                    )
                    runs.append(run)
                    log(
                        f"{structure}, {method}: {run.reached or '>' + str(len(run.rows))} interactions, "
                        f"Dice {run.final_dice:.3f}, {run.total_s:.0f} s"
                    )
            browser.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        redis.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    summary = {
        "subject_seed": subject.seed,
        "lesion_diameter_mm": diameter,
        "box_voxels": list(BOX),
        "structures": {
            name: {"voxels": int(mask.sum()), "ml": float(mask.sum() * voxel_ml)} for name, mask in truths.items()
        },
        "target_dice": TARGET_DICE,
        "budget": args.budget,
        "runs": [
            {
                "structure": r.structure,
                "method": r.method,
                "interactions_to_target": r.reached,
                "seconds_to_target": r.reached_s,
                "interactions": len(r.rows),
                "final_dice": r.final_dice,
                "seconds": r.total_s,
                "kinds": {
                    kind: sum(1 for row in r.rows if row["kind"] == kind) for kind in ("key", "click", "stroke", "drag")
                },
                "log": r.rows,
            }
            for r in runs
        ],
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    (OUT / "bench_editing_effort.json").write_text(json.dumps(summary, indent=1))

    print()
    print(
        f"Editing effort to Dice {TARGET_DICE:.2f}: simulated 1 mm scan (box {'x'.join(map(str, BOX))}, "
        f"seed {subject.seed}), scripted annotator, headless Chromium"
    )
    header = f"{'structure':<12} {'method':<7} {'interactions':>12} {'keys':>5} {'clicks':>6} {'drags':>7}"
    print(f"{header} {'time (s)':>9} {'Dice':>6}")
    by = {(r.structure, r.method): r for r in runs}
    for r in runs:
        kinds = summary["runs"][runs.index(r)]["kinds"]
        n = r.reached if r.reached else f">{len(r.rows)}"
        t = f"{r.reached_s:.0f}" if r.reached_s else f">{r.total_s:.0f}"
        counts = f"{kinds['key']:>5} {kinds['click']:>6} {kinds['stroke'] + kinds['drag']:>7}"
        print(f"{r.structure:<12} {r.method:<7} {n!s:>12} {counts} {t:>9} {r.final_dice:>6.3f}")
    for structure in ("lesion", "ventricles"):
        a, b = by.get((structure, "brush")), by.get((structure, "tools"))
        if not (a and b):
            continue  # not both methods run on it
        if a.reached and b.reached:
            ratio = a.reached / b.reached
            verdict = "PASS" if ratio >= 3 else "FAIL"
            print(f"{structure}: {ratio:.1f}x fewer interactions with the new tools  (target >= 3x: {verdict})")
        else:
            print(f"{structure}: a run did not reach Dice {TARGET_DICE} within {args.budget} interactions")
    sizes = ", ".join(f"{k} {v['voxels']} voxels, {v['ml']:.2f} mL" for k, v in summary["structures"].items())
    print(f"(structures: {sizes}; raw log in {OUT / 'bench_editing_effort.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

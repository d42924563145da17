// The review page's rework panel: every rater's assignment of the scan with its status; a lead
// sends one submission back for rework with a comment (required), which the rater reads in their
// worklist and viewer. While a submission is back, nothing about the scan is final: the
// decision buttons wait, and the consensus reruns when the rater resubmits. Below it, the scan's
// comment threads (every rater's with the leads, and notes among the leads).
import { CommentThread } from "./comments.js";
import { leadApi } from "./lead-api.js";
import { app } from "./review-state.js";
import { $ } from "./session.js";
import { badge, cell, fillBody, row } from "./tables.js";

const STATUS_TEXT = { todo: "to do", in_progress: "in progress", submitted: "submitted", returned: "sent back" };

/** Fetch the scan's assignments (after a return, a comment or a reload). */
export async function loadRework() {
  app.assignments = await leadApi.assignments(app.scanId);
  app.inRework = app.assignments.some((a) => a.status === "returned");
}

function sendBackButton(assignment) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "secondary small";
  button.textContent = "Send back…";
  button.dataset.assignment = String(assignment.id);
  button.addEventListener("click", () => openReturnForm(assignment));
  return button;
}

function openReturnForm(assignment) {
  const form = $("return-form");
  form.dataset.assignment = String(assignment.id);
  $("return-rater").textContent = assignment.annotator;
  $("return-result").textContent = "";
  form.hidden = false;
  $("return-comment").focus();
}

export function renderSubmissions() {
  const rows = (app.assignments ?? []).map((a) => {
    const status = cell(badge(STATUS_TEXT[a.status] || a.status, `status-${a.status}`));
    if (a.status === "returned" && a.return_comment) status.title = `${a.return_comment.author}: ${a.return_comment.text}`;
    return row(
      [
        cell(a.annotator, { className: "rater" }),
        status,
        cell(a.head_revision ? String(a.head_revision) : "–", { num: true }),
        cell(a.status === "submitted" ? sendBackButton(a) : ""),
      ],
      { assignment: a.id, status: a.status },
    );
  });
  fillBody($("submissions-body"), rows, { empty: "No rater is assigned yet.", columns: 4 });
  const back = (app.assignments ?? []).filter((a) => a.status === "returned").map((a) => a.annotator);
  $("rework-state").textContent = back.length
    ? `Back with ${back.join(", ")} for rework: nothing about this scan is final until they resubmit; the consensus then reruns.`
    : "Send a submission back when a rater should look again; they see your comment in their worklist and viewer.";
  const target = $("comment-target");
  const keep = target.value;
  target.replaceChildren(
    ...(app.assignments ?? []).map((a) => new Option(`${a.annotator} (their thread)`, String(a.id))),
    new Option("the leads only", ""),
  );
  if ([...target.options].some((o) => o.value === keep)) target.value = keep;
}

async function sendBack(event, onChange) {
  event.preventDefault();
  const form = $("return-form");
  const id = Number(form.dataset.assignment);
  const assignment = app.assignments.find((a) => a.id === id);
  const comment = $("return-comment").value.trim();
  const result = $("return-result");
  if (!comment) {
    result.textContent = "Write why: the rater reads it. A submission is not sent back without a comment.";
    result.className = "result-bad";
    return;
  }
  $("return-confirm").disabled = true;
  try {
    await leadApi.returnAssignment(id, comment);
    form.hidden = true;
    $("return-comment").value = "";
    await Promise.all([onChange(), app.comments.load()]); // the return's comment opens the rater's thread
    result.textContent = `Sent back to ${assignment?.annotator ?? `assignment ${id}`}. The consensus reruns when they resubmit.`;
    result.className = "result-ok";
    document.body.dataset.returned = String(id);
  } catch (error) {
    result.textContent = `Not sent back: ${error.message}`;
    result.className = "result-bad";
  } finally {
    $("return-confirm").disabled = false;
  }
}

/**
 * Wire the panel once.
 * @param {() => Promise<void>} onChange reload the page's data after a submission was sent back
 */
export function wireRework(onChange) {
  $("return-form").addEventListener("submit", (event) => sendBack(event, onChange));
  $("return-cancel").addEventListener("click", () => {
    $("return-form").hidden = true;
  });
  app.comments = new CommentThread({
    list: $("comments"),
    form: $("comment-form"),
    input: $("comment-text"),
    status: $("comment-status"),
    scanId: app.scanId,
    target: $("comment-target"),
    showRater: true,
  });
  return app.comments.load();
}

// A scan's comments (rater <-> leads), shown in the viewer and on the review page. The server
// decides who reads what: a rater gets the thread of their own assignment with the leads and
// never another rater's; a lead gets every thread (or one, by assignment).
import { api } from "./api.js";

const KIND_TEXT = { return: "sent back for rework" };

/**
 * One comment as a list item.
 * @param {{id:number, author:string, from_lead:boolean, kind:string, text:string, created_at:string, rater:string|null}} comment
 * @param {{showRater?: boolean}} [options] name whose thread it is (the leads' view of every thread)
 */
export function commentItem(comment, { showRater = false } = {}) {
  const li = document.createElement("li");
  li.dataset.comment = String(comment.id);
  li.dataset.kind = comment.kind;
  if (comment.from_lead) li.classList.add("from-lead");
  const meta = document.createElement("span");
  meta.className = "comment-meta";
  const thread = showRater ? (comment.rater ? ` · to/from ${comment.rater}` : " · leads only") : "";
  const kind = KIND_TEXT[comment.kind] ? ` · ${KIND_TEXT[comment.kind]}` : "";
  meta.textContent = `${comment.author}${comment.from_lead ? " (lead)" : ""}${kind}${thread} · ${new Date(comment.created_at).toLocaleString()}`;
  const text = document.createElement("span");
  text.className = "comment-text";
  text.textContent = comment.text;
  li.append(meta, text);
  return li;
}

/** The comment thread of a scan wired to a list, a text box and a send button. */
export class CommentThread {
  /**
   * @param {object} options
   * @param {HTMLElement} options.list the <ul> the comments go in
   * @param {HTMLFormElement} options.form the form with the text box (submitting sends)
   * @param {HTMLTextAreaElement} options.input
   * @param {HTMLElement} options.status where a refusal is said
   * @param {number} options.scanId
   * @param {number|null} [options.assignmentId] whose thread is read and written (a lead: that rater's;
   *   a rater: their own either way); null: every thread the user may read
   * @param {HTMLSelectElement|null} [options.target] where a lead's comment goes when reading every thread:
   *   its value is an assignment id, or "" for a note among the leads
   * @param {boolean} [options.showRater] say whose thread each comment is in
   */
  constructor({ list, form, input, status, scanId, assignmentId = null, target = null, showRater = false }) {
    Object.assign(this, { list, form, input, status, scanId, assignmentId, target, showRater });
    this.comments = [];
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
  }

  async load() {
    this.comments = await api.comments(this.scanId, this.assignmentId);
    this.render();
    return this.comments;
  }

  render() {
    const items = this.comments.map((c) => commentItem(c, { showRater: this.showRater }));
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "No comments yet.";
      items.push(li);
    }
    this.list.replaceChildren(...items);
    this.list.dataset.count = String(this.comments.length);
    this.list.scrollTop = this.list.scrollHeight;
  }

  async send() {
    const text = this.input.value.trim();
    this.status.textContent = "";
    if (!text) {
      this.status.textContent = "Write something first.";
      return;
    }
    const button = this.form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    try {
      const to = this.assignmentId ?? (this.target?.value ? Number(this.target.value) : null);
      await api.addComment(this.scanId, text, to);
      this.input.value = "";
      await this.load();
    } catch (error) {
      this.status.textContent = `Not sent: ${error.message}`;
    } finally {
      if (button) button.disabled = false;
    }
  }
}

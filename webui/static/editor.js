// The mapping and template editors: the form's textarea shown as CodeMirror (line numbers,
// highlighting), the line of an error marked, and a button that shows it. The textarea stays
// the form's field, kept up to date on every change, so the form is the same with scripts off.
(function () {
  const field = document.getElementById("document");
  if (!field || typeof CodeMirror === "undefined") return;
  const editor = CodeMirror.fromTextArea(field, {
    mode: field.dataset.mode,
    lineNumbers: true,
    indentUnit: 2,
    tabSize: 2,
    lineWrapping: field.dataset.mode !== "yaml", // a note's long lines; YAML shows its indents
    // YAML allows no tabs: Tab indents with spaces, in templates too (a note is plain text).
    extraKeys: {
      Tab: (cm) => cm.execCommand(cm.somethingSelected() ? "indentMore" : "insertSoftTab"),
      "Shift-Tab": "indentLess",
    },
    screenReaderLabel: field.getAttribute("aria-label"),
  });
  // The live preview (mapping.js) listens to the textarea, as it does with scripts off.
  editor.on("change", function () {
    editor.save();
    field.dispatchEvent(new Event("input"));
  });

  let marked = null;
  function unmark() {
    if (marked === null) return;
    editor.removeLineClass(marked, "background", "editor-error-line");
    editor.removeLineClass(marked, "gutter", "editor-error-gutter");
    marked = null;
  }

  // Put the cursor at a place, and scroll the editor so it is in sight.
  function show(where) {
    editor.focus();
    editor.setCursor(where);
    editor.scrollIntoView(null, editor.getScrollInfo().clientHeight / 3);
  }

  // Where an error is (data-line and data-column, from 1), as CodeMirror counts (from 0).
  function place(error) {
    const line = Math.min(Number(error.dataset.line), editor.lineCount()) - 1;
    return { line: line, ch: Math.max(Number(error.dataset.column || 1) - 1, 0) };
  }

  // Add a button to an error that shows its line in the editor.
  function offer(error) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "show-line";
    button.textContent = "Show line " + (place(error).line + 1);
    button.addEventListener("click", () => show(place(error)));
    error.append(" ", button);
  }

  // Mark the line of an error (none: take the mark away).
  function mark(error) {
    unmark();
    if (!error) return;
    const line = place(error).line;
    marked = editor.addLineClass(line, "background", "editor-error-line");
    editor.addLineClass(line, "gutter", "editor-error-gutter");
  }

  document.querySelectorAll(".placed[data-line]").forEach(offer);
  // An error of the last save (the page's own) is shown at once. An error of the preview,
  // redrawn as the admin types, is marked, and the cursor stays where the admin types.
  const preview = document.getElementById("preview");
  const saved = document.querySelector("main > .placed[data-line]");
  if (saved) {
    mark(saved);
    show(place(saved));
  } else if (preview) {
    mark(preview.querySelector(".placed[data-line]"));
  }
  if (preview) {
    new MutationObserver(function () {
      const error = preview.querySelector(".placed[data-line]");
      if (error) offer(error);
      mark(error);
    }).observe(preview, { childList: true });
  }
})();

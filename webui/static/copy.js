// Copy buttons: <button class="copy" data-copy="ID"> copies the text of the element ID, so
// that an admin pastes the exact URL into the vendor's form. The clipboard API needs a secure
// page (HTTPS or localhost); elsewhere the text is selected for Ctrl-C instead.
"use strict";

for (const button of document.querySelectorAll("button[data-copy]")) {
  button.addEventListener("click", async () => {
    const source = document.getElementById(button.dataset.copy);
    if (!source) return;
    const text = source.textContent.trim();
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch {
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      button.textContent = "Selected: press Ctrl-C";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 3000);
  });
}

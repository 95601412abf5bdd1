// Live preview of a mapping being edited: post the document as you type, show the result.
(function () {
  const form = document.getElementById("mapping-form");
  const documentField = document.getElementById("document");
  const preview = document.getElementById("preview");
  if (!form || !documentField || !preview) return;
  const token = form.querySelector("input[name=csrf_token]").value;
  let timer = null;
  let latest = 0;
  documentField.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(async function () {
      const asked = ++latest;
      const body = new URLSearchParams({ document: documentField.value });
      const response = await fetch(form.dataset.preview, {
        method: "POST", body: body, headers: { "X-CSRF-Token": token }, credentials: "same-origin",
      });
      if (asked === latest && response.ok) preview.innerHTML = await response.text();
    }, 300);
  });
})();

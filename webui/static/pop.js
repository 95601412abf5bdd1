// The screen-pop's live updates: follow its event stream and swap in each new body.
// The stream's signed URL comes in the page's data-events attribute (no inline script).
// The handoff form, outside the swapped body, shows while a call is in progress (the body
// marks it with data-call-live) and posts its note as JSON to the signed URL in data-url.
(function () {
  var live = document.getElementById("live");
  var pop = document.getElementById("pop");
  var form = document.getElementById("handoff");
  if (!live || !pop || !pop.dataset.events) return;

  function showForm() {
    if (form) form.hidden = !pop.querySelector("[data-call-live]");
  }

  function connect() {
    var source = new EventSource(pop.dataset.events);
    source.addEventListener("open", function () { live.textContent = "live"; live.className = ""; });
    source.addEventListener("pop", function (event) { pop.innerHTML = event.data; showForm(); });
    source.addEventListener("error", function () {
      live.textContent = "reconnecting…"; live.className = "off";
      if (source.readyState === EventSource.CLOSED) { setTimeout(connect, 30000); }
    });
  }

  function handoff() {
    var text = form.querySelector("textarea");
    var button = form.querySelector("button");
    var status = document.getElementById("handoff-status");
    function say(message, failed) {
      status.textContent = message;
      status.className = failed ? "failed" : "";
    }
    text.addEventListener("input", function () { say("", false); });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!text.value.trim()) { say("Type the note first.", true); return; }
      button.disabled = true;
      say("Saving…", false);
      fetch(form.dataset.url, {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({text: text.value})
      }).then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          if (response.ok) {
            text.value = "";
            say("Saved: the next agent sees it", false);
          } else {
            say(body.error || "Not saved (" + response.status + ")", true);
          }
        });
      }).catch(function () {
        say("Not saved: Carryover cannot be reached. Try again.", true);
      }).then(function () { button.disabled = false; });
    });
  }

  if (form && form.dataset.url) handoff();
  showForm();
  connect();
})();

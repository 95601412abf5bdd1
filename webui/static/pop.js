// The screen-pop's live updates: follow its event stream and swap in each new body.
// The stream's signed URL comes in the page's data-events attribute (no inline script).
(function () {
  var live = document.getElementById("live");
  var pop = document.getElementById("pop");
  if (!live || !pop || !pop.dataset.events) return;
  function connect() {
    var source = new EventSource(pop.dataset.events);
    source.addEventListener("open", function () { live.textContent = "live"; live.className = ""; });
    source.addEventListener("pop", function (event) { pop.innerHTML = event.data; });
    source.addEventListener("error", function () {
      live.textContent = "reconnecting…"; live.className = "off";
      if (source.readyState === EventSource.CLOSED) { setTimeout(connect, 30000); }
    });
  }
  connect();
})();

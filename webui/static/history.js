// While a history import runs, refresh its section every two seconds (the page works without).
(function () {
  let section = document.getElementById("history");
  if (!section || section.dataset.live !== "true") return;
  const refresh = document.getElementById("history-refresh");
  if (refresh) refresh.hidden = true;
  const url = section.dataset.progress;
  const timer = setInterval(async function () {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) return;
    const holder = document.createElement("div");
    holder.innerHTML = await response.text();
    const fresh = holder.querySelector("#history");
    if (!fresh) return;
    section.replaceWith(fresh);
    section = fresh;
    const link = document.getElementById("history-refresh");
    if (link) link.hidden = true;
    if (fresh.dataset.live !== "true") clearInterval(timer);
  }, 2000);
})();

// Ask what an import would read once the page is there, and while an import runs, refresh its
// section every two seconds (the page works without).
(function () {
  let section = document.getElementById("history");
  if (!section) return;

  async function fragment(url, id) {
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) return null;
      const holder = document.createElement("div");
      holder.innerHTML = await response.text();
      return holder.querySelector("#" + id);
    } catch (error) {
      return null; // the server is out of reach: the next refresh tries again
    }
  }

  async function askPlan() {
    const plan = section.querySelector("#history-plan[data-plan]");
    if (!plan) return;
    const fresh = await fragment(plan.dataset.plan, "history-plan");
    if (!plan.isConnected) return;
    if (fresh) {
      plan.replaceWith(fresh);
    } else {
      const asking = plan.querySelector(".muted");
      if (asking) asking.textContent = "could not ask; reload the page to try again";
    }
  }

  askPlan();
  if (section.dataset.live !== "true") return;
  const refresh = document.getElementById("history-refresh");
  if (refresh) refresh.hidden = true;
  const url = section.dataset.progress;
  const timer = setInterval(async function () {
    const fresh = await fragment(url, "history");
    if (!fresh) return;
    section.replaceWith(fresh);
    section = fresh;
    const link = document.getElementById("history-refresh");
    if (link) link.hidden = true;
    if (fresh.dataset.live !== "true") {
      clearInterval(timer);
      askPlan();
    }
  }, 2000);
})();

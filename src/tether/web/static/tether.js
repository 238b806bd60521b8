// Tether's dashboard needs no script to work; this only adds "unfold / fold all" for the
// folded tool calls, results and summaries of a transcript.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-fold]");
  if (!button) return;
  const open = button.dataset.fold === "open";
  for (const d of document.querySelectorAll(".transcript details")) d.open = open;
});

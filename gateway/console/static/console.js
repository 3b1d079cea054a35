// Drawbridge console: small progressive enhancements. Every page works without this file.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Ask before forms that stop people's access (the server also asks for a ticked box).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  // The one-time secret: select on focus, and a copy button.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    const status = document.querySelector("[data-copy-status]");
    button.addEventListener("click", async () => {
      field.select();
      try {
        await navigator.clipboard.writeText(field.value);
        if (status) status.textContent = "Copied to the clipboard.";
      } catch (error) {
        const copied = document.execCommand && document.execCommand("copy");
        if (status) status.textContent = copied ? "Copied." : "Select the key and copy it.";
      }
    });
    field.addEventListener("focus", () => field.select());
  }

  // The approval queue: j / k move between requests, a approves, r writes a rejection.
  const items = Array.from(document.querySelectorAll("[data-queue-item]"));
  if (!items.length) return;
  let current = 0;
  const show = (index) => {
    current = Math.max(0, Math.min(items.length - 1, index));
    items.forEach((item, i) => item.toggleAttribute("data-current", i === current));
    items[current].focus();
  };
  for (const [index, item] of items.entries()) {
    item.addEventListener("focusin", () => {
      current = index;
      items.forEach((other, i) => other.toggleAttribute("data-current", i === index));
    });
  }
  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest("input, textarea, select, video");
    if (typing || event.altKey || event.ctrlKey || event.metaKey) return;
    const item = items[current];
    if (event.key === "j") { show(current + 1); event.preventDefault(); }
    else if (event.key === "k") { show(current - 1); event.preventDefault(); }
    else if (event.key === "a") {
      const approve = item.querySelector("[data-approve]");
      if (approve) { event.preventDefault(); approve.click(); }
    } else if (event.key === "r") {
      const reason = item.querySelector("[data-reason]");
      if (reason) { event.preventDefault(); reason.focus(); }
    }
  });
});

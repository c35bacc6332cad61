// The language switch: a link in the header of every page to the same page in the other edition
// (English <-> 中文). Offline: no request leaves the book. Two layouts are recognised:
//   the build folders side by side        _build/html/...     <->  _build/html-zh/...
//   the published site                    <site>/...          <->  <site>/zh/...
// The edition's root is the page's data-content_root (written by Sphinx), so the page keeps its own path.
(function () {
  "use strict";
  function otherRoot(root, zh) {
    const path = root.pathname;
    if (zh) {
      if (/\/html-zh\/$/.test(path)) return new URL("../html/", root);
      if (/\/zh\/$/.test(path)) return new URL("../", root);
      return null;
    }
    if (/\/html\/$/.test(path)) return new URL("../html-zh/", root);
    return new URL("zh/", root);
  }
  function add() {
    const html = document.documentElement;
    const zh = (html.lang || "").toLowerCase().startsWith("zh");
    const root = new URL(html.dataset.content_root || "./", window.location.href);
    const target = otherRoot(root, zh);
    if (!target || !window.location.href.startsWith(root.href)) return;
    const page = window.location.href.slice(root.href.length).split("#")[0] || "index.html";
    const link = document.createElement("a");
    link.className = "btn btn-sm language-switch";
    link.href = new URL(page, target).href;
    link.hreflang = zh ? "en" : "zh-CN";
    link.lang = zh ? "en" : "zh-CN";
    link.title = zh ? "Read this page in English" : "阅读本页的中文版";
    link.textContent = zh ? "English" : "中文";
    const header = document.querySelector(".article-header-buttons");
    if (header) header.prepend(link);
    else (document.querySelector("article") || document.body).prepend(link);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", add);
  else add();
})();

// The sin-batch catalogue page's loader: each <model-viewer data-name=... data-preview=...> gets its mesh when it
// comes near the screen. The preview is a classic script (index_files/meshes/<name>.js) calling
// sinBatchMesh(name, base64 GLB): a page opened from disk (file://) may load scripts, not fetch a .glb.
(function () {
  "use strict";
  var viewers = {};

  window.sinBatchMesh = function (name, glb) {
    var viewer = viewers[name];
    if (viewer) {
      viewer.src = "data:model/gltf-binary;base64," + glb;
    }
  };

  function load(viewer) {
    var script = document.createElement("script");
    script.src = viewer.dataset.preview;
    script.onerror = function () {
      viewer.insertAdjacentText("afterend", "3D preview missing: " + viewer.dataset.preview);
    };
    document.head.appendChild(script);
  }

  function start() {
    var all = Array.prototype.slice.call(document.querySelectorAll("model-viewer[data-preview]"));
    all.forEach(function (viewer) { viewers[viewer.dataset.name] = viewer; });
    if (!("IntersectionObserver" in window)) {
      all.forEach(load);
      return;
    }
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) {
          observer.unobserve(entry.target);
          load(entry.target);
        }
      });
    }, { rootMargin: "600px" });
    all.forEach(function (viewer) { observer.observe(viewer); });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();

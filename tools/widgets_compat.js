// Loaded after widgets/embed-amd.js on every page with widgets (_config.yml,
// nb_ipywidgets_js); tools/vendor_js.sh copies it to _vendor/widgets/compat.js.
// It fixes two mismatches between the vendored widget manager and this book:
//
// 1. The manager finds its icon fonts next to the AMD module
//    "@jupyter-widgets/html-manager/dist/libembed-amd", which require.js would look
//    for under the *page's* folder (notebooks/@jupyter-widgets/...: a 404 for every
//    font). Map that module to this file's own folder, where the fonts are.
// 2. ipywidgets 8 typesets widget labels with MathJax 2's MathJax.Hub.Queue whenever
//    window.MathJax exists; the book loads MathJax 3, which has no Hub ("Cannot read
//    properties of undefined (reading 'Queue')"). Provide Hub.Queue on MathJax 3.
(function () {
  var here = document.currentScript.src.replace(/[?#].*$/, "");
  require.config({
    paths: {"@jupyter-widgets/html-manager/dist": here.slice(0, here.lastIndexOf("/"))},
  });

  var pending = [];
  function typeset(elements) {
    var ready = window.MathJax && MathJax.typesetPromise;
    if (!ready) { pending.push.apply(pending, elements); return; }
    MathJax.typesetPromise(elements).catch(function (err) { console.warn(err); });
  }
  // MathJax 2's call: MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])
  var hub = {Queue: function (job) { if (job && job[2]) typeset([job[2]]); }};
  var config = window.MathJax = window.MathJax || {};
  if (config.version) { config.Hub = hub; return; }  // MathJax 3 already running
  config.Hub = hub;  // until MathJax 3 has loaded (it keeps its config elsewhere)
  var startup = config.startup = config.startup || {};
  var userReady = startup.ready;
  startup.ready = function () {
    (userReady || MathJax.startup.defaultReady)();
    MathJax.Hub = hub;
    MathJax.startup.promise.then(function () {
      if (pending.length) typeset(pending.splice(0));
    });
  };
})();

// Loaded after require.js and before widgets/embed-amd.js (which requires its modules
// as it loads) on every page with widgets (_config.yml, nb_ipywidgets_js), after
// the MathJax configuration; tools/vendor_js.sh copies it to _vendor/widgets/compat.js.
// It fixes two mismatches between the vendored widget manager and this book:
//
// 1. The manager's modules ("@jupyter-widgets/controls", ".../html-manager/dist/
//    libembed-amd", ...) find their icon fonts next to where require.js would load
//    them from, which is under the *page's* folder (notebooks/@jupyter-widgets/...:
//    a 404 for every font). Map them to this file's own folder, where the fonts are.
// 2. ipywidgets 8 typesets widget labels with MathJax 2's MathJax.Hub.Queue whenever
//    window.MathJax exists; the book loads MathJax 3, which has no Hub ("Cannot read
//    properties of undefined (reading 'Queue')"). Provide Hub.Queue on MathJax 3.
(function () {
  var here = document.currentScript.src.replace(/[?#].*$/, "");
  var folder = here.slice(0, here.lastIndexOf("/"));
  require.config({
    paths: {"@jupyter-widgets/html-manager/dist": folder, "@jupyter-widgets": folder},
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

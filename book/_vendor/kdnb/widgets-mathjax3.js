// kdnb: the widget controls of @jupyter-widgets/html-manager 1.0.x typeset their labels with the MathJax 2 API
// (MathJax.Hub.Queue) whenever window.MathJax exists; the site runs MathJax 3, which has no Hub, so every
// labelled control would throw. Loaded with `defer` after MathJax 3 and before the widgets render (on `load`),
// this gives MathJax 3 that one entry point, typesetting the label with MathJax 3's own API.
(function () {
  var mathjax = window.MathJax;
  if (!mathjax || mathjax.Hub) {
    return;
  }
  mathjax.Hub = {
    Queue: function (job) {
      var element = Array.isArray(job) ? job[2] : undefined;
      var current = window.MathJax;
      if (!element || !current || !current.startup || !current.startup.promise) {
        return;
      }
      current.startup.promise
        .then(function () { return current.typesetPromise([element]); })
        .catch(function (error) { console.warn("kdnb: MathJax could not typeset a widget label", error); });
    }
  };
})();

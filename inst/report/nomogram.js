(function () {
  'use strict';
  var spec = JSON.parse(document.getElementById('nomo-spec').textContent);
  var derived = spec.derived || {};
  var preds = spec.predictors;
  var first = (spec.check && spec.check.length) ? spec.check[0] : {};
  var inputs = {};
  var box = document.getElementById('nomo-inputs');
  function baseInputs(name, acc) {
    var d = derived[name];
    if (!d) { if (acc.indexOf(name) < 0) acc.push(name); return acc; }
    if (d.indicator) { if (acc.indexOf(d.indicator) < 0) acc.push(d.indicator); return acc; }
    d.product.forEach(function (v) { baseInputs(v, acc); });
    return acc;
  }
  var names = [];
  preds.forEach(function (p) { baseInputs(p.name, names); });
  function predictor(name) { return preds.filter(function (p) { return p.name === name; })[0]; }
  function levelsOf(name) {
    var p = predictor(name);
    if (p && p.type === 'factor') return p.levels;
    for (var k in derived) { if (derived[k].indicator === name && derived[k].levels) return derived[k].levels; }
    return null;
  }
  names.forEach(function (name) {
    var row = document.createElement('label');
    row.textContent = name + ' ';
    var levels = levelsOf(name), el;
    if (levels) {
      el = document.createElement('select');
      levels.forEach(function (l) { var o = document.createElement('option'); o.value = l; o.textContent = l; el.appendChild(o); });
      if (first[name] !== undefined && first[name] !== null) el.value = String(first[name]);
    } else {
      el = document.createElement('input');
      el.type = 'number'; el.step = 'any';
      var p = predictor(name);
      if (p && p.range) { el.min = p.range[0]; el.max = p.range[1]; }
      el.value = (first[name] !== undefined && first[name] !== null) ? first[name] : (p && p.range ? (p.range[0] + p.range[1]) / 2 : 0);
    }
    el.id = 'nomo-' + name;
    el.addEventListener('input', update); el.addEventListener('change', update);
    row.appendChild(el);
    var pts = document.createElement('span');
    pts.className = 'pts';
    row.appendChild(pts);
    box.appendChild(row);
    inputs[name] = el;
  });
  var out = document.getElementById('nomo-outputs');
  var times = spec.baseline_survival.times, s0 = spec.baseline_survival.s0;
  if (!Array.isArray(times)) { times = [times]; s0 = [s0]; }
  times.forEach(function (t) {
    var p = document.createElement('p');
    p.innerHTML = 'Predicted ' + t + '-month survival: <b id="nomo-surv-' + t + '" data-value="">-</b>';
    out.appendChild(p);
  });
  function value(name) {
    var d = derived[name];
    if (d && d.indicator) return String(inputs[d.indicator].value) === String(d.level) ? 1 : 0;
    if (d && d.product) return value(d.product[0]) * value(d.product[1]);
    var el = inputs[name];
    return el.tagName === 'SELECT' ? el.value : parseFloat(el.value);
  }
  function update() {
    var total = 0, ok = true;
    preds.forEach(function (p) {
      var x = value(p.name), pts;
      if (p.type === 'factor') { var i = p.levels.indexOf(String(x)); pts = i < 0 ? NaN : (Array.isArray(p.points) ? p.points[i] : p.points); }
      else { pts = p.a + p.b * x; }
      if (!isFinite(pts)) ok = false;
      total += pts;
      var el = inputs[p.name];
      if (el) { var span = el.parentNode.querySelector('.pts'); span.id = 'nomo-points-' + p.name; span.setAttribute('data-value', pts); span.textContent = ' ' + (isFinite(pts) ? pts.toFixed(1) : '?') + ' points'; }
    });
    var tot = document.getElementById('nomo-total');
    tot.setAttribute('data-value', ok ? total : '');
    tot.textContent = ok ? total.toFixed(1) : 'invalid input';
    var lp = spec.total_points_to_lp.intercept + spec.total_points_to_lp.slope * total;
    times.forEach(function (t, i) {
      var s = Math.pow(s0[i], Math.exp(lp));
      var el = document.getElementById('nomo-surv-' + t);
      el.setAttribute('data-value', ok ? s : '');
      el.textContent = ok ? (100 * s).toFixed(1) + '%' : 'invalid input';
    });
  }
  // Values given in the address, e.g. report.html#age=59&sex=female, fill the inputs.
  location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
    var i = kv.indexOf('=');
    if (i < 1) return;
    var el = inputs[decodeURIComponent(kv.slice(0, i))];
    if (el) el.value = decodeURIComponent(kv.slice(i + 1));
  });
  update();
})();

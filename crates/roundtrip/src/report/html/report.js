// The HTML report's page: reads the embedded JSON (the JSON report, trimmed) and builds
// the document. Every string that comes from a run (names, payload excerpts, SUT output)
// goes in through textContent, never as markup.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("data").textContent);
  var root = document.getElementById("report");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent, tag, cls, text) {
    var e = el(tag, cls, text);
    parent.appendChild(e);
    return e;
  }
  function ns(v) {
    if (v === null || v === undefined) return "-";
    if (v < 1e3) return v + "ns";
    if (v < 1e6) return (v / 1e3).toPrecision(3) + "µs";
    if (v < 1e9) return (v / 1e6).toPrecision(3) + "ms";
    return (v / 1e9).toPrecision(3) + "s";
  }
  function wall(v) {
    return new Date(v / 1e6).toISOString();
  }
  function table(parent, head, rows) {
    var t = add(parent, "table");
    var tr = add(add(t, "thead"), "tr");
    head.forEach(function (h) { add(tr, "th", null, h); });
    var body = add(t, "tbody");
    rows.forEach(function (r) {
      var row = add(body, "tr");
      r.forEach(function (c) {
        var td = add(row, "td");
        if (c && c.nodeType) td.appendChild(c); else td.textContent = c === undefined ? "" : String(c);
      });
    });
    return t;
  }
  function badge(status) {
    return el("span", "badge " + status, status);
  }
  var charts = 0;
  function chart(parent, title, opts, series, rows) {
    var box = add(parent, "div", "chart");
    add(box, "h4", null, title);
    var width = Math.max(320, Math.min(960, (root.clientWidth || 960) - 40));
    var o = {
      width: width,
      height: opts.height || 220,
      scales: opts.scales || { x: { time: false } },
      axes: opts.axes || [{ label: opts.xlabel || "s" }, { label: opts.ylabel || "" }],
      series: [{ label: opts.xlabel || "s" }].concat(series),
      legend: { live: true },
    };
    new uPlot(o, rows, box);
    charts += 1;
    return box;
  }
  var palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
  function line(label, i, extra) {
    var s = { label: label, stroke: palette[i % palette.length], width: 1.5 };
    for (var k in extra || {}) s[k] = extra[k];
    return s;
  }

  function functional(section, run) {
    var rows = run.scenarios.map(function (s) {
      return [badge(s.status), s.name, s.sent, s.send_errors, ns(s.duration_ns)];
    });
    table(section, ["status", "scenario", "sent", "send errors", "duration"], rows);
    run.scenarios.forEach(function (s) {
      if (run.load) return;
      var det = add(section, "details", "scenario");
      if (s.status !== "passed") det.open = true;
      var sum = add(det, "summary");
      sum.appendChild(badge(s.status));
      sum.appendChild(el("span", null, " " + s.name));
      if (s.error) add(det, "p", "error", "error: " + s.error);
      (s.notes || []).forEach(function (n) { add(det, "p", "note", "note: " + n); });
      (s.expectations || []).forEach(function (e) { expectation(det, e); });
    });
  }

  function expectation(parent, e) {
    var box = add(parent, "div", "expectation");
    var h = add(box, "h4");
    h.appendChild(badge(e.outcome.status));
    h.appendChild(el("span", null, " " + e.description));
    var l = e.latency;
    add(box, "p", null, e.matched + " matched" + (l ? " · latency p50 " + ns(l.p50_ns) + " · p90 " + ns(l.p90_ns) + " · p99 " + ns(l.p99_ns) + " · max " + ns(l.max_ns) : "") + (e.wall_clock ? " (wall clock)" : ""));
    var o = e.outcome;
    if (o.status === "failed") {
      add(box, "p", "error", o.kind + ": " + o.message);
      (o.events || []).forEach(function (k) {
        add(box, "p", null, k.kind + ": " + k.count + " event(s)" + (k.events && k.events.length ? " (e.g. #" + k.events.slice(0, 10).join(", #") + ")" : ""));
      });
      var ev = o.evidence;
      if (ev && ev.near_miss) {
        add(box, "h5", null, "closest near-miss (seq " + ev.near_miss.observation.seq + ")");
        table(box, ["field", "expected", "actual"], ev.near_miss.diffs.map(function (d) {
          return [d.path, d.expected, d.actual === null || d.actual === undefined ? "(missing)" : d.actual];
        }));
        add(box, "pre", null, ev.near_miss.observation.excerpt);
      }
      if (ev) {
        add(box, "p", null, "the channel saw " + ev.channel_observations + " observation(s), " + ev.correlated_observations + " correlated with this scenario's events");
        var seen = {};
        var briefs = (ev.offending || []).concat(ev.last || []).filter(function (b) {
          if (seen[b.seq]) return false;
          seen[b.seq] = true;
          return true;
        });
        if (briefs.length) {
          table(box, ["seq", "correlation id", "received", "after send", "excerpt"], briefs.map(function (b) {
            return [b.seq, b.correlation_id || "", wall(b.received_at), ns(b.after_send_ns), b.excerpt];
          }));
        }
      }
    }
    // The timeline: each event's arrival after its send, in send order.
    var lat = e.latency_samples || [];
    if (lat.length > 1) {
      var xs = [], ys = [];
      lat.forEach(function (v, i) { xs.push(i * (e.latency_stride || 1)); ys.push(v / 1e6); });
      chart(box, "arrival after send, per event (ms)", { xlabel: "event", ylabel: "ms", height: 160 },
        [line("latency", 0, { points: { show: true, size: 3 }, width: 0 })], [xs, ys]);
    }
  }

  function listeners(section, run) {
    if (!run.listeners.length) return;
    add(section, "h3", null, "listeners");
    table(section, ["channel", "transport", "delivery", "recorded", "faults", "redelivered", "gaps"], run.listeners.map(function (l) {
      return [l.channel, l.transport + (l.polling ? " (polling)" : ""), l.delivery, l.recorded, l.faults, l.redelivered || 0, (l.gaps || []).join("\n")];
    }));
  }

  function load(section, r) {
    var who = r.workers > 1 ? (r.per_worker && r.per_worker.length ? r.workers + " workers, merged" : "worker " + r.worker + " of " + r.workers + " (its own part)") : "one worker";
    add(section, "h3", null, "load: " + r.scenario + " · " + r.profile + " · " + r.streams + " stream(s) per worker · " + who);
    var c = r.send.counts;
    add(section, "p", null, "sent " + c.attempted + " of " + c.due + " due in " + ns(r.send_ns) + " (" + c.failed + " failed, " + c.refused + " refused), drained for " + ns(r.drain_ns) + "; send lag p99 " + ns(r.send.lag.p99_ns) + ", max " + ns(r.send.lag.max_ns));
    if (r.send.first_error) add(section, "p", "error", "first send error: " + r.send.first_error);
    table(section, ["SLA", "measured", "limit", ""], r.thresholds.map(function (t) {
      return [t.what, t.actual, t.limit, badge(t.passed ? "passed" : "failed")];
    }));
    table(section, ["channel", "delivered", "lost", "late", "duplicates", "reordered", "after loss", "p50", "p99", "p99.9", "max", "listener lag p99"], r.flows.map(function (f) {
      var k = f.counts;
      if (f.absence) return [f.channel + " (nothing within " + ns(f.sla_ns) + ")", "", "", "", "", "", "", "", "", "", "", k.unexpected + " arrived"];
      return [f.channel, k.delivered, f.lost, k.late, k.duplicates, k.reordered, k.after_loss, ns(f.latency.p50_ns), ns(f.latency.p99_ns), ns(f.latency.p999_ns), ns(f.latency.max_ns), ns(f.listener_lag.p99_ns)];
    }));
    var pts = r.series;
    if (!pts.length) return;
    var t = pts.map(function (p) { return (p.start_ns + p.length_ns) / 1e9; });
    var per = function (p, n) { return p.length_ns > 0 ? n / (p.length_ns / 1e9) : 0; };
    var grid = add(section, "div", "charts");
    r.flows.forEach(function (f, fi) {
      if (f.absence) return;
      var name = " on " + f.channel;
      chart(grid, "throughput (events/s)" + name, { ylabel: "/s" }, [line("sent", 0), line("received", 1)], [
        t, pts.map(function (p) { return per(p, p.send.attempted); }), pts.map(function (p) { return per(p, p.flows[fi].counts.delivered); })]);
      var q = ["p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns"];
      chart(grid, "latency from intended send (ms)" + name, { ylabel: "ms" }, q.map(function (k, i) { return line(k.replace("_ns", "").replace("p999", "p99.9"), i); }),
        [t].concat(q.map(function (k) { return pts.map(function (p) { var h = p.flows[fi].latency; return h.count ? h[k] / 1e6 : null; }); })));
      var curve = f.latency_curve || [];
      if (curve.length > 1) {
        chart(grid, "latency distribution" + name + " (ms by percentile)", {
          xlabel: "percentile", ylabel: "ms",
          scales: { x: { time: false, distr: 3 } },
          axes: [{
            label: "percentile",
            splits: function (u) { return [1, 2, 10, 100, 1000, 10000, 100000, 1000000].filter(function (v) { return v <= u.scales.x.max; }); },
            values: function (u, vals) { return vals.map(function (v) { return { 1: "0%", 2: "50%", 10: "90%", 100: "99%", 1000: "99.9%", 10000: "99.99%", 100000: "99.999%", 1000000: "99.9999%" }[v] || ""; }); },
          }, { label: "ms" }],
        }, [line("latency", 2)], [curve.map(function (p) { return 1 / Math.max(1e-7, 1 - p[0]); }), curve.map(function (p) { return p[1] / 1e6; })]);
      }
      var kinds = ["declared_lost", "duplicates", "reordered", "late", "after_loss"];
      chart(grid, "anomalies per interval" + name, { ylabel: "events" }, kinds.map(function (k, i) { return line(k.replace("_", " "), i + 3); }),
        [t].concat(kinds.map(function (k) { return pts.map(function (p) { return p.flows[fi].counts[k]; }); })));
    });
    chart(grid, "sender: lag behind schedule (ms) and events behind", {
      ylabel: "ms",
      scales: { x: { time: false }, y: {}, n: {} },
      axes: [{ label: "s" }, { label: "ms" }, { side: 1, scale: "n", label: "events", grid: { show: false } }],
    }, [line("send lag p99", 0), line("send lag max", 1), line("behind", 3, { scale: "n" }), line("in flight", 4, { scale: "n" })], [
      t,
      pts.map(function (p) { return p.send_lag.count ? p.send_lag.p99_ns / 1e6 : null; }),
      pts.map(function (p) { return p.send_lag.count ? p.send_lag.max_ns / 1e6 : null; }),
      pts.map(function (p) { return p.behind; }),
      pts.map(function (p) { return p.in_flight; })]);
    workers(section, r);
  }

  // A run shared by several workers: each worker's own part, and its series beside the others'.
  function workers(section, r) {
    var parts = r.per_worker || [];
    if (!parts.length) return;
    var fi = r.flows.findIndex(function (f) { return !f.absence; });
    if (fi < 0) return;
    add(section, "h3", null, "per worker");
    table(section, ["worker", "sent", "failed", "refused", "delivered", "lost", "late", "duplicates", "reordered", "p99", "its SLAs"], parts.map(function (w) {
      var c = w.send.counts, f = w.flows[fi], k = f.counts;
      var ok = w.thresholds.every(function (t) { return t.passed; });
      return [String(w.worker), c.attempted, c.failed, c.refused, k.delivered, f.lost, k.late, k.duplicates, k.reordered, ns(f.latency.p99_ns), badge(ok ? "passed" : "failed")];
    }));
    // The workers' points are thinned alike; each on its own time axis, aligned by index.
    var longest = parts.reduce(function (a, w) { return w.series.length > a.series.length ? w : a; }, parts[0]);
    var t = longest.series.map(function (p) { return (p.start_ns + p.length_ns) / 1e9; });
    var at = function (w, f) { return t.map(function (_, i) { var p = w.series[i]; return p ? f(p) : null; }); };
    var grid = add(section, "div", "charts");
    chart(grid, "received per worker (events/s)", { ylabel: "/s" }, parts.map(function (w, i) { return line("worker " + w.worker, i); }),
      [t].concat(parts.map(function (w) { return at(w, function (p) { return p.length_ns > 0 ? p.flows[fi].counts.delivered / (p.length_ns / 1e9) : 0; }); })));
    chart(grid, "declared lost per worker", { ylabel: "events" }, parts.map(function (w, i) { return line("worker " + w.worker, i); }),
      [t].concat(parts.map(function (w) { return at(w, function (p) { return p.flows[fi].counts.declared_lost; }); })));
  }

  add(root, "h1", null, "roundtrip report");
  add(root, "p", "meta", data.passed + " passed, " + data.failed + " failed · generated by roundtrip " + data.generator);
  data.runs.forEach(function (run) {
    var section = add(root, "section", "run");
    var h = add(section, "h2");
    h.appendChild(badge(run.status));
    h.appendChild(el("span", null, " " + run.suite + " (" + run.suite_path + ")"));
    add(section, "p", "meta", "run " + run.run_id + " · started " + wall(run.started_at) + " · " + ns(run.finished_at - run.started_at) + (run.interrupted ? " · interrupted" : ""));
    if (run.harness_error) add(section, "p", "error", "harness error: " + run.harness_error);
    functional(section, run);
    if (run.load) load(section, run.load);
    listeners(section, run);
    if (run.sut_log && run.sut_log.length) {
      add(section, "h3", null, "the system under test's last output");
      add(section, "pre", "log", run.sut_log.join("\n"));
    }
  });
  var done = add(root, "p", "done", "");
  done.id = "done";
  done.setAttribute("data-charts", String(charts));
})();

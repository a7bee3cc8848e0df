//! The plain-text rendering of a load run's account: the live view's line per interval
//! and the final report (also what `roundtrip report` prints for a load run).

use std::fmt::Write as _;

use roundtrip_core::escape::{escape, escape_text};
use roundtrip_core::latency::format_ns;
use roundtrip_core::load::{FlowReport, HistStats, IntervalPoint, LoadReport, Snapshot, share};

/// One line of the live view: `  3s  sent 500/s  received 498/s  in flight 4  behind 0
/// p99 3.1ms  lost 0  dup 0  reordered 0  late 0`.
pub fn interval_line(point: &IntervalPoint, totals: &Snapshot) -> String {
    let secs = point.length_ns.max(1) as f64 / 1e9;
    let end = format_ns(point.start_ns + point.length_ns);
    let mut out = format!("{end:>7}  sent {:.0}/s", point.send.attempted as f64 / secs);
    if let (Some(flow), Some(total)) = (point.flows.first(), totals.flows.first()) {
        let _ = write!(
            out,
            "  received {:.0}/s  in flight {}  behind {}  p99 {}  lost {}  dup {}  reordered {}  late {}",
            flow.counts.delivered as f64 / secs,
            point.in_flight,
            point.behind,
            p99_or_dash(&flow.latency),
            total.lost(),
            total.duplicates,
            total.reordered,
            total.late
        );
    }
    if totals.send.failed + totals.send.refused > 0 {
        let _ = write!(
            out,
            "  send errors {}  refused {}",
            totals.send.failed, totals.send.refused
        );
    }
    out
}

/// The p99 of `h`, or `-` when it holds nothing.
fn p99_or_dash(h: &HistStats) -> String {
    if h.count == 0 {
        "-".to_owned()
    } else {
        format_ns(h.p99_ns)
    }
}

fn percentiles(h: &HistStats) -> String {
    if h.count == 0 {
        return "none".into();
    }
    let mut out = format!(
        "p50 {} · p90 {} · p99 {} · p99.9 {} · max {}",
        format_ns(h.p50_ns),
        format_ns(h.p90_ns),
        format_ns(h.p99_ns),
        format_ns(h.p999_ns),
        format_ns(h.max_ns)
    );
    if h.clipped > 0 {
        let _ = write!(out, " ({} above 1h, counted as 1h)", h.clipped);
    }
    out
}

/// The whole account.
pub fn load_report(r: &LoadReport) -> String {
    let mut out = String::new();
    let c = &r.send.counts;
    let _ = writeln!(
        out,
        "load `{}`: {}, {} stream(s), window {} per stream{}",
        escape(&r.scenario),
        r.profile,
        r.streams,
        r.window,
        r.max_in_flight
            .map(|m| format!(", at most {m} in flight"))
            .unwrap_or_default()
    );
    if r.workers > 1 {
        let _ = writeln!(
            out,
            "  {}",
            if r.per_worker.is_empty() {
                format!(
                    "worker {} of {} of a shared run: its own part (`roundtrip report` \
                     shows the run's merged account)",
                    r.worker, r.workers
                )
            } else {
                format!(
                    "{} workers, each on that schedule: their accounts merged",
                    r.workers
                )
            }
        );
    }
    let _ = writeln!(
        out,
        "  sent {} of {} due in {} ({} failed, {} refused), drained for {}",
        c.attempted,
        c.due,
        format_ns(r.send_ns),
        c.failed,
        c.refused,
        format_ns(r.drain_ns)
    );
    let _ = writeln!(
        out,
        "  send lag behind schedule: {}",
        percentiles(&r.send.lag)
    );
    if let Some(e) = &r.send.first_error {
        let _ = writeln!(out, "  first send error: {}", escape(e));
    }
    let sent = c.attempted.saturating_sub(c.failed);
    for f in &r.flows {
        out.push_str(&flow(f, sent));
    }
    for w in &r.per_worker {
        out.push_str(&worker_line(w));
    }
    if !r.thresholds.is_empty() {
        let _ = writeln!(out, "  SLAs:");
        for t in &r.thresholds {
            let _ = writeln!(
                out,
                "    {} {}: {}, {}",
                if t.passed { "PASS" } else { "FAIL" },
                t.what,
                t.actual,
                t.limit
            );
        }
    }
    out
}

/// One worker's part of a merged account, on one line.
fn worker_line(w: &LoadReport) -> String {
    let c = &w.send.counts;
    let sent = c.attempted.saturating_sub(c.failed);
    let mut out = format!(
        "  worker {}: sent {} of {} due ({} failed, {} refused)",
        w.worker, c.attempted, c.due, c.failed, c.refused
    );
    if let Some(f) = w.flows.iter().find(|f| !f.absence) {
        let k = &f.counts;
        let _ = write!(
            out,
            " · on `{}`: delivered {} · lost {} · duplicates {} · reordered {} · late {} · p99 {}",
            escape_text(&f.channel),
            share(k.delivered, sent),
            f.lost,
            k.duplicates,
            k.reordered,
            k.late,
            p99_or_dash(&f.latency)
        );
    }
    let verdict = if w.passed() {
        ""
    } else {
        " · its own SLAs FAILED"
    };
    let _ = writeln!(out, "{verdict}");
    out
}

fn flow(f: &FlowReport, sent: u64) -> String {
    let mut out = String::new();
    let on = escape_text(&f.channel);
    let k = &f.counts;
    if f.absence {
        let _ = writeln!(
            out,
            "  on `{on}` (nothing within {}): {} arrivals",
            format_ns(f.sla_ns),
            k.unexpected
        );
        ids(&mut out, "arrived", &f.examples.unexpected);
        return out;
    }
    let _ = writeln!(
        out,
        "  on `{on}` (SLA {}, grace {}):",
        format_ns(f.sla_ns),
        format_ns(f.grace_ns)
    );
    let _ = writeln!(
        out,
        "    delivered {} · lost {} · late {} · duplicates {} · reordered {}",
        share(k.delivered, sent),
        share(f.lost, sent),
        share(k.late, sent),
        k.duplicates,
        k.reordered
    );
    if f.unsettled > 0 {
        let _ = writeln!(
            out,
            "    {} not settled when the run ended (interrupted, or the drain was cut short): \
             neither arrived nor past their deadline, not counted as lost",
            f.unsettled
        );
    }
    if k.declared_lost > f.lost {
        let _ = writeln!(
            out,
            "    declared lost {}, of which {} arrived later (late after loss) and {} had \
             arrived in time",
            k.declared_lost, k.after_loss, k.recovered
        );
    }
    if k.lost_by_window > 0 {
        let _ = writeln!(
            out,
            "    {} declared lost when they fell out of the window",
            k.lost_by_window
        );
    }
    let _ = writeln!(
        out,
        "    latency from intended send: {}",
        percentiles(&f.latency)
    );
    let _ = writeln!(
        out,
        "    listener lag (receipt to accounting): {}",
        percentiles(&f.listener_lag)
    );
    let others = [
        ("not matching", k.mismatched),
        ("not of this run", k.foreign),
        ("another worker's", k.others),
        ("never sent", k.not_sent),
        ("settled too long ago to classify", k.unknown),
    ];
    let others: Vec<String> = others
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{n} {what}"))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(out, "    other arrivals: {}", others.join(" · "));
    }
    let e = &f.examples;
    ids(&mut out, "lost", &e.lost);
    ids(&mut out, "duplicate", &e.duplicate);
    ids(&mut out, "reordered", &e.reordered);
    ids(&mut out, "late", &e.late);
    ids(&mut out, "late after loss", &e.after_loss);
    ids(&mut out, "not matching", &e.mismatched);
    out
}

fn ids(out: &mut String, what: &str, ids: &[String]) {
    if let Some(first) = ids.first() {
        let more = if ids.len() > 1 {
            format!(" (and {} more listed in the JSON report)", ids.len() - 1)
        } else {
            String::new()
        };
        let _ = writeln!(out, "    {what}, e.g. {}{more}", escape(first));
    }
}

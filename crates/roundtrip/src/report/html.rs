//! The HTML report: one self-contained file per invocation (`run --html`, `load --html`,
//! `report RUN --html`). The page (`html/page.html`), its script (`html/report.js`) and
//! uPlot (`html/uPlot.iife.min.js`, MIT, vendored unchanged) are inlined, with the run
//! data as JSON in a `<script type="application/json">`; a Content-Security-Policy of
//! `default-src 'none'` keeps the file from making any request.
//!
//! The data is the JSON report, trimmed for size: each expectation's latencies are
//! downsampled to at most [`MAX_SAMPLES`] (`latency_samples`, every `latency_stride`-th),
//! the HDR blobs of a load run are dropped and its latency distribution is given as
//! points (`latency_curve`: percentile, ns). Every string from a run is put into the page
//! by `textContent`, never as markup, and `<` is escaped inside the JSON, so no payload
//! can close the script element.

use std::path::Path;

use roundtrip_core::load::{Hist, LoadReport};
use roundtrip_core::run::RunSummary;
use serde_json::{Value, json};

const PAGE: &str = include_str!("html/page.html");
const APP_JS: &str = include_str!("html/report.js");
const UPLOT_JS: &str = include_str!("html/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("html/uPlot.min.css");

/// The most latency samples per expectation the page plots.
pub const MAX_SAMPLES: usize = 2_000;

/// The report of `summaries` as one HTML document.
pub fn render(summaries: &[RunSummary]) -> String {
    let runs: Vec<Value> = summaries.iter().map(run_data).collect();
    let data = json!({
        "generator": env!("CARGO_PKG_VERSION"),
        "passed": summaries.iter().map(RunSummary::passed).sum::<usize>(),
        "failed": summaries.iter().map(RunSummary::failed).sum::<usize>(),
        "runs": runs,
    });
    // `<` only occurs inside JSON strings, where `\u003c` means the same: nothing in the
    // data can end the script element or open a comment.
    let data = data.to_string().replace('<', "\\u003c");
    // The data goes in last, so that nothing it holds is taken for a marker.
    PAGE.replace("/*UPLOT_CSS*/", UPLOT_CSS)
        .replace("/*UPLOT_JS*/", UPLOT_JS)
        .replace("/*APP_JS*/", APP_JS)
        .replace("/*DATA*/", &data)
}

/// Writes the report of `summaries` to `path`.
pub fn write(summaries: &[RunSummary], path: &Path) -> std::io::Result<()> {
    std::fs::write(path, render(summaries))
}

fn run_data(summary: &RunSummary) -> Value {
    let mut v = serde_json::to_value(summary).unwrap_or(Value::Null);
    v["status"] = Value::from(summary.status().as_str());
    if let Some(scenarios) = v.get_mut("scenarios").and_then(Value::as_array_mut) {
        for e in scenarios
            .iter_mut()
            .filter_map(|s| s.get_mut("expectations").and_then(Value::as_array_mut))
            .flatten()
        {
            downsample(e);
        }
    }
    if let Some(load) = &summary.load {
        v["load"] = load_data(load);
    }
    v
}

/// Replaces `latencies_ns` with at most [`MAX_SAMPLES`] of them.
fn downsample(e: &mut Value) {
    let Some(Value::Array(all)) = e.as_object_mut().and_then(|o| o.remove("latencies_ns")) else {
        return;
    };
    let stride = all.len().div_ceil(MAX_SAMPLES).max(1);
    let kept: Vec<Value> = all.into_iter().step_by(stride).collect();
    e["latency_samples"] = Value::Array(kept);
    e["latency_stride"] = Value::from(stride);
}

fn load_data(load: &LoadReport) -> Value {
    let mut v = serde_json::to_value(load).unwrap_or(Value::Null);
    if let Some(flows) = v.get_mut("flows").and_then(Value::as_array_mut) {
        for (f, report) in flows.iter_mut().zip(&load.flows) {
            let curve: Vec<Value> = Hist::decode(&report.latency)
                .map(|h| h.curve())
                .unwrap_or_default()
                .into_iter()
                .map(|(q, ns)| json!([q, ns]))
                .collect();
            f["latency_curve"] = Value::Array(curve);
        }
    }
    drop_key(&mut v, "hdr");
    v
}

fn drop_key(v: &mut Value, key: &str) {
    match v {
        Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|x| drop_key(x, key));
        }
        Value::Array(items) => items.iter_mut().for_each(|x| drop_key(x, key)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> roundtrip_core::run::ListenerSummary {
        roundtrip_core::run::ListenerSummary {
            channel: "out".into(),
            transport: "webhook".into(),
            recorded: 0,
            faults: 0,
            delivery: "at-least-once".into(),
            polling: false,
            redelivered: 0,
            gaps: Vec::new(),
        }
    }

    #[test]
    fn the_page_is_self_contained_and_data_cannot_close_its_script() {
        let mut summary = crate::engine::tests::summary(Vec::new(), listener());
        summary.suite = "</script><script>alert(1)</script><!--".into();
        summary.sut_log = vec!["/*DATA*/ /*APP_JS*/ </SCRIPT>".into()];
        let page = render(&[summary]);
        // One data element, three scripts (data, uPlot, the page's), nothing else.
        assert_eq!(page.matches("<script").count(), 3, "{page:.300}");
        assert_eq!(page.matches("</script>").count(), 3);
        assert!(!page.contains("alert(1)</script>"));
        assert!(page.contains("\\u003c/script>\\u003cscript>alert(1)"));
        assert!(page.contains("default-src 'none'"));
        for attr in [" src=", " href=", "@import", "url("] {
            assert!(!PAGE.contains(attr) && !APP_JS.contains(attr), "{attr}");
        }
        // The embedded data reads back as the runs.
        let start = page.find("id=\"data\">").expect("the data element") + 10;
        let end = start + page[start..].find("</script>").expect("its end");
        let data: Value = serde_json::from_str(&page[start..end]).expect("JSON");
        assert_eq!(
            data["runs"][0]["suite"],
            "</script><script>alert(1)</script><!--"
        );
        assert_eq!(data["runs"][0]["status"], "passed");
    }

    /// What docs/load.md promises: a load run's page stays under 2 MB whatever its
    /// length, since the series holds at most `MAX_POINTS` points.
    #[test]
    fn a_full_series_makes_a_page_under_two_megabytes() {
        use roundtrip_core::load::{AccountConfig, Accountant, FlowKind, FlowSpec, Profile};
        const MS: u64 = 1_000_000;
        let points = roundtrip_core::load::MAX_POINTS as u64;
        // Ten events per 10 ms interval, latencies spread over 1 to 500 ms, every 97th
        // lost and every 89th duplicated: each point has a full set of histograms.
        let mut a = Accountant::new(AccountConfig {
            run_id: "run".into(),
            worker: 0,
            streams: 4,
            profile: Profile::parse("1000/s", std::time::Duration::from_millis(10 * points))
                .expect("a rate"),
            flows: vec![FlowSpec {
                expectation: 0,
                channel: "out".into(),
                kind: FlowKind::Presence {
                    sla_ns: 200 * MS,
                    grace_ns: 200 * MS,
                },
            }],
            interval_ns: 10 * MS,
            slack_ns: 25 * MS,
            keep: 20,
            max_in_flight: None,
            max_points: roundtrip_core::load::MAX_POINTS,
        });
        for i in 0..a.profile().total() {
            let (stream, seq) = ((i % 4) as u32, i / 4);
            let at = a.profile().intended_ns(i);
            a.attempt(stream, seq, at);
            if i % 97 != 0 {
                let id = a.id_of(stream, seq).to_string();
                let got = at + MS + (i * 7919 % 500) * MS;
                a.arrive(0, Some(&id), true, got, got + 50_000);
                if i % 89 == 0 {
                    a.arrive(0, Some(&id), true, got + MS, got + MS);
                }
            }
            a.tick(at);
        }
        let end = 10 * MS * points + 500 * MS;
        let mut summary = crate::engine::tests::summary(Vec::new(), listener());
        summary.load = Some(Box::new(a.finish(end, "s", 0, 10 * MS * points)));
        let series = summary.load.as_ref().map_or(0, |l| l.series.len());
        assert!(
            series >= roundtrip_core::load::MAX_POINTS - 1,
            "{series} points"
        );
        let page = render(&[summary.clone()]);
        assert!(
            page.len() < 2 * 1024 * 1024,
            "{} bytes for {series} points",
            page.len()
        );
        // A run shared by 8 workers: the merged series plus each worker's thinned one.
        let Some(one) = summary.load.as_deref() else {
            panic!("the summary has its load")
        };
        let parts: Vec<LoadReport> = (0..8)
            .map(|w| LoadReport {
                worker: w,
                workers: 8,
                ..one.clone()
            })
            .collect();
        let merged = LoadReport::merge(&parts, None, roundtrip_core::load::MAX_POINTS, 20)
            .expect("the parts add up");
        assert_eq!(merged.per_worker.len(), 8);
        summary.load = Some(Box::new(merged));
        let page = render(&[summary]);
        assert!(
            page.len() < 2 * 1024 * 1024,
            "{} bytes for 8 workers' {series} points",
            page.len()
        );
    }

    #[test]
    fn latencies_are_downsampled_and_histogram_blobs_dropped() {
        let mut e = json!({ "latencies_ns": (0..5000).collect::<Vec<u64>>() });
        downsample(&mut e);
        assert_eq!(e["latency_samples"].as_array().map(Vec::len), Some(1667));
        assert_eq!(e["latency_stride"], 3);
        assert!(e.get("latencies_ns").is_none());
        let mut v = json!({ "a": { "hdr": "x", "b": [{ "hdr": "y", "c": 1 }] } });
        drop_key(&mut v, "hdr");
        assert_eq!(v, json!({ "a": { "b": [{ "c": 1 }] } }));
    }
}

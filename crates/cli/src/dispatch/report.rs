//! `roundtrip report RUN_ID`: re-render a past run from the store alone.

use roundtrip::report::text;
use roundtrip::store::StoreError;

use super::print_error;
use crate::args::ReportArgs;
use crate::display::out;
use crate::exit;

pub async fn report(args: ReportArgs) -> u8 {
    if let Err(code) = super::check_outputs(&args.output) {
        return code;
    }
    let store = match roundtrip::store::open_existing(&args.store.store).await {
        Ok(s) => s,
        Err(e) => return super::store_failed(&e),
    };
    let run_id = if args.run_id == "latest" {
        match store.runs(1).await {
            Ok(runs) => match runs.into_iter().next() {
                Some(r) => r.run_id,
                None => {
                    eprintln!(
                        "error: the store {} has no runs",
                        roundtrip_core::redact::url(&args.store.store)
                    );
                    return exit::USAGE;
                }
            },
            Err(e) => {
                print_error(&e);
                return exit::HARNESS;
            }
        }
    } else {
        args.run_id.clone()
    };
    let summary = match store.run_summary(&run_id).await {
        Ok(Some(s)) => s,
        Ok(None) => match store.run(&run_id).await {
            Ok(Some(record)) => {
                match roundtrip::store::unfinished_summary(store.as_ref(), record).await {
                    Ok(summary) => {
                        eprintln!(
                            "note: run {run_id} has not finished (its process was killed, or is \
                         still running): this report is built from what the store holds"
                        );
                        summary
                    }
                    Err(e) => {
                        print_error(&e);
                        return exit::HARNESS;
                    }
                }
            }
            Ok(None) => {
                print_error(&StoreError::NoSuchRun(run_id));
                eprintln!("  = help: `roundtrip runs` lists the runs in the store");
                return exit::USAGE;
            }
            Err(e) => {
                print_error(&e);
                return exit::HARNESS;
            }
        },
        Err(e) => {
            print_error(&e);
            return exit::HARNESS;
        }
    };
    for line in text::run_report(&summary).lines() {
        out(line);
    }
    if let Err(code) = super::write_reports(&args.output, std::slice::from_ref(&summary)) {
        return code;
    }
    out(&text::totals(std::slice::from_ref(&summary)));
    if let Some(given) = &args.correlation {
        // A shortened id (as a narrow terminal shows it) matches by prefix among the
        // run's sent events.
        let sent = match store.sent_events(&run_id).await {
            Ok(sent) => sent,
            Err(e) => {
                print_error(&e);
                return exit::HARNESS;
            }
        };
        let mut candidates: Vec<&str> = sent
            .iter()
            .map(|e| e.correlation_id.as_str())
            .filter(|c| c.starts_with(given.as_str()))
            .collect();
        candidates.dedup();
        let id = match candidates.as_slice() {
            [exact] if *exact == given => given.clone(),
            [one] => {
                out(&format!("(`{given}` matched event {one} by prefix)"));
                (*one).to_owned()
            }
            [] => {
                out(&format!(
                    "no event of run {run_id} has a correlation id starting with `{}`; \
                     observations that carry it anyway are listed",
                    roundtrip_core::escape::escape(given)
                ));
                given.clone()
            }
            many => {
                eprintln!(
                    "error: `{given}` is the start of {} events' correlation ids ({}{}); give \
                     more of it",
                    many.len(),
                    many.iter().take(5).copied().collect::<Vec<_>>().join(", "),
                    if many.len() > 5 { ", …" } else { "" }
                );
                return exit::USAGE;
            }
        };
        match store.correlated(&run_id, &id).await {
            Ok(observations) => {
                out(&format!(
                    "observations of event {id}: {}",
                    observations.len()
                ));
                for o in observations {
                    out(&format!(
                        "  #{} {} on {}: {}",
                        o.seq,
                        roundtrip::clock::format_wall(o.received_at),
                        o.channel,
                        o.payload.excerpt(100)
                    ));
                }
            }
            Err(e) => {
                print_error(&e);
                return exit::HARNESS;
            }
        }
    }
    if summary.failed() > 0 || summary.harness_error.is_some() {
        exit::FAILED
    } else {
        exit::OK
    }
}

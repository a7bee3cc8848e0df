//! `roundtrip runs`: list recent runs.

use roundtrip::clock::format_wall;
use roundtrip_core::run::RunStatus;

use super::print_error;
use crate::args::RunsArgs;
use crate::display::out;
use crate::exit;

pub async fn runs(args: RunsArgs) -> u8 {
    let store = match roundtrip::store::open_existing(&args.store.store).await {
        Ok(s) => s,
        Err(e) => return super::store_failed(&e),
    };
    match store.runs(args.limit).await {
        Ok(runs) if runs.is_empty() => {
            out(&format!(
                "no runs in {}",
                roundtrip_core::redact::url(&args.store.store)
            ));
            exit::OK
        }
        Ok(runs) => {
            let mut dead = 0;
            for r in runs {
                // A run still `running` whose process is gone will never finish.
                let status = match (r.status, r.owner.as_deref()) {
                    (RunStatus::Running, Some(owner)) => match roundtrip::owner::liveness(owner) {
                        roundtrip::owner::Liveness::Dead => {
                            dead += 1;
                            "dead"
                        }
                        roundtrip::owner::Liveness::Alive => "running",
                        roundtrip::owner::Liveness::Unknown => "running?",
                    },
                    (status, _) => status.as_str(),
                };
                out(&format!(
                    "{}  {:<11} {}  {} ({})",
                    r.run_id,
                    status,
                    format_wall(r.started_at),
                    roundtrip_core::escape::escape(&r.suite),
                    roundtrip_core::escape::escape(&r.suite_path)
                ));
            }
            if dead > 0 {
                out(&format!(
                    "{dead} run(s) marked dead: their process is gone (killed, crashed); \
                     `roundtrip report RUN_ID` shows what they recorded"
                ));
            }
            exit::OK
        }
        Err(e) => {
            print_error(&e);
            exit::HARNESS
        }
    }
}

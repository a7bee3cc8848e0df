//! `roundtrip runs`: list recent runs.

use roundtrip::clock::format_wall;

use super::print_error;
use crate::args::RunsArgs;
use crate::display::out;
use crate::exit;

pub async fn runs(args: RunsArgs) -> u8 {
    let store = match roundtrip::store::open_existing(&args.store.store).await {
        Ok(s) => s,
        Err(e @ roundtrip::store::StoreError::Missing { .. }) => {
            print_error(&e);
            return exit::USAGE;
        }
        Err(e) => {
            print_error(&e);
            return exit::HARNESS;
        }
    };
    match store.runs(args.limit).await {
        Ok(runs) if runs.is_empty() => {
            out(&format!("no runs in {}", args.store.store));
            exit::OK
        }
        Ok(runs) => {
            for r in runs {
                out(&format!(
                    "{}  {:<11} {}  {} ({})",
                    r.run_id,
                    r.status,
                    format_wall(r.started_at),
                    r.suite,
                    r.suite_path
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

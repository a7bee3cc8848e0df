//! `roundtrip aws-cleanup`: sweep harness-owned AWS resources a killed run left behind.

use roundtrip::transport::aws::cleanup::{SweepOptions, sweep};

use crate::args::AwsCleanupArgs;
use crate::display::out;
use crate::exit;

pub async fn aws_cleanup(args: AwsCleanupArgs) -> u8 {
    let options = SweepOptions {
        region: args.region,
        endpoint: args.endpoint,
        older_than: args.older_than,
        run: args.run,
        dry_run: args.dry_run,
    };
    let swept = match sweep(&options).await {
        Ok(swept) => swept,
        Err(e) => {
            eprintln!("error: failed to sweep AWS resources: {e}");
            return exit::HARNESS;
        }
    };
    if swept.is_empty() {
        out(&format!(
            "no harness-owned AWS resources older than {}",
            humantime::format_duration(options.older_than)
        ));
        return exit::OK;
    }
    let mut failed = false;
    for s in &swept {
        let age = humantime::format_duration(std::time::Duration::from_secs(s.age.as_secs()));
        match &s.outcome {
            Ok(what) => out(&format!("{what:<15} {:<17} {} (age {age})", s.kind, s.name)),
            Err(why) => {
                failed = true;
                eprintln!("error: failed to remove {} {}: {why}", s.kind, s.name);
            }
        }
    }
    if failed { exit::HARNESS } else { exit::OK }
}

//! `roundtrip serve --stdio`: the engine protocol on stdin and stdout
//! (`roundtrip::protocol`, docs/protocol.md).

use crate::args::ServeArgs;

pub async fn serve(args: ServeArgs) -> u8 {
    // `--stdio` is required by clap; the only transport so far.
    debug_assert!(args.stdio);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        // The first signal closes every run; a second one exits at once.
        if let Some(signal) = super::interrupted().await {
            eprintln!("{signal}: closing every open run (again to exit at once)");
            let _ = stop_tx.send(true);
        }
        if let Some(signal) = super::interrupted().await {
            eprintln!("{signal}: exiting at once");
            std::process::exit(i32::from(crate::exit::HARNESS));
        }
    });
    roundtrip::protocol::serve(tokio::io::stdin(), tokio::io::stdout(), args.store, stop).await;
    crate::exit::OK
}

//! `roundtrip serve --stdio`: the engine protocol on stdin and stdout
//! (`roundtrip::protocol`, docs/protocol.md).

use crate::args::ServeArgs;

pub async fn serve(args: ServeArgs) -> u8 {
    // `--stdio` is required by clap; the only transport so far.
    debug_assert!(args.stdio);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if let Some(signal) = super::interrupted().await {
            eprintln!("{signal}: closing every open run");
            let _ = stop_tx.send(true);
        }
    });
    roundtrip::protocol::serve(tokio::io::stdin(), tokio::io::stdout(), args.store, stop).await;
    0
}

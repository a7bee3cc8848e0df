//! `roundtrip listen CONFIG`: the listener service, until Ctrl-C or SIGTERM.

use roundtrip::service::{RunningService, ServiceOptions, Tokens};
use roundtrip_core::escape::escape;

use super::{print_error, store_failed};
use crate::args::{DEFAULT_STORE, ListenArgs};
use crate::display::out;
use crate::exit;

pub async fn listen(args: ListenArgs) -> u8 {
    let vars = match super::resolve_vars(&args.vars) {
        Ok(vars) => vars,
        Err(code) => return code,
    };
    let loaded = match roundtrip_core::listen::load_with(&args.config, &vars) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprint!("{e}");
            return exit::USAGE;
        }
    };
    let config = &loaded.config;
    let tokens = match Tokens::from_sources(&config.api.tokens, |name| vars.get(name)) {
        Ok(tokens) => tokens,
        Err(why) => {
            eprintln!(
                "error: {}: {}",
                escape(&args.config.display().to_string()),
                escape(&why)
            );
            return exit::USAGE;
        }
    };
    let store_url = args
        .store
        .clone()
        .or_else(|| config.store.clone())
        .unwrap_or_else(|| DEFAULT_STORE.to_owned());
    if args.check {
        if let Err(e) = roundtrip::service::check(&loaded, &tokens) {
            print_error(&e);
            return exit::USAGE;
        }
        if let Err(e) = roundtrip::store::check(&store_url) {
            return store_failed(&e);
        }
        out(&format!(
            "ok: {} ({}: {} channel(s))",
            escape(&args.config.display().to_string()),
            escape(&config.name),
            config.channels.len()
        ));
        return exit::OK;
    }
    let store = match roundtrip::store::open(&store_url).await {
        Ok(store) => store,
        Err(e) => return store_failed(&e),
    };
    let guarded = tokens.any();
    let options = ServiceOptions {
        store_url: store_url.clone(),
        tokens,
    };
    let service = match RunningService::start(&loaded, store, options).await {
        Ok(service) => service,
        Err(e) => {
            print_error(&e);
            return if e.is_usage() {
                exit::USAGE
            } else {
                exit::HARNESS
            };
        }
    };
    out(&format!(
        "roundtrip listen: {} recording into {}",
        escape(&config.name),
        escape(&roundtrip_core::redact::url(&store_url))
    ));
    for (channel, endpoint) in service.endpoints() {
        out(&format!(
            "  channel {}: {}",
            escape(&channel),
            escape(&endpoint)
        ));
    }
    out(&format!(
        "  api: {} ({})",
        service.api_url(),
        if guarded {
            "bearer tokens required"
        } else {
            "open: loopback only"
        }
    ));
    out(&format!("  evidence run: {}", service.home_run()));
    out("ready");

    // A service that cannot watch signals runs until it is killed.
    let signal = match super::interrupted().await {
        Some(signal) => signal,
        None => std::future::pending().await,
    };
    eprintln!("{signal}: stopping (committing what was received)");
    match service.stop().await {
        Ok(listeners) => {
            for l in listeners {
                out(&format!(
                    "  channel {}: {} recorded, {} fault(s)",
                    escape(&l.channel),
                    l.recorded,
                    l.faults
                ));
            }
            exit::OK
        }
        Err(e) => store_failed(&e),
    }
}

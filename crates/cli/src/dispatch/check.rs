//! `roundtrip check`: validate suite files, run nothing.

use crate::args::CheckArgs;
use crate::display::out;
use crate::exit;

pub fn check(args: &CheckArgs) -> u8 {
    let vars = match super::resolve_vars(&args.vars) {
        Ok(vars) => vars,
        Err(code) => return code,
    };
    let mut code = exit::OK;
    for path in &args.suites {
        match roundtrip_core::suite::load_with(path, &vars) {
            Ok(loaded) => out(&format!(
                "ok: {} ({}: {} scenario(s), {} channel(s))",
                path.display(),
                roundtrip_core::escape::escape(&loaded.suite.name),
                loaded.suite.scenarios.len(),
                loaded.suite.channels.len()
            )),
            Err(e) => {
                eprint!("{e}");
                code = exit::USAGE;
            }
        }
    }
    code
}

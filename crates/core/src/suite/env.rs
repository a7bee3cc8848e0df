//! `env(…)` resolved once, when a suite is loaded: in every string option of every
//! channel (URLs, hosts, regions, endpoints, names), in `sut.start`, and in send bodies,
//! texts and headers. So one suite runs unchanged on a laptop, in CI and against a
//! deployed environment, changing only variables; the option checks that follow see
//! the real values (a port rendered from `env()` is checked as a port); and an unset
//! variable without a default is a located error at `check` time, not a failed send.
//! Other expressions (`run_id`, `correlation_id`, `seq`, …) are left for the engine.

use std::collections::BTreeMap;

use serde_json::Value;

use super::diagnostic::Diagnostic;
use super::locate::YamlPath;
use super::validate::Locator;
use crate::model::listen::ListenConfig;
use crate::model::{ChannelSpec, Suite};
use crate::template::{Template, TemplateError};
use crate::vars::Vars;

/// Renders `env(…)` in place; returns a diagnostic per variable that is unset without
/// a default. Templates that do not parse are left for validation to report.
pub(crate) fn render(suite: &mut Suite, vars: &Vars, at: &Locator<'_>) -> Vec<Diagnostic> {
    let mut pass = Pass {
        vars,
        at,
        out: Vec::new(),
    };
    let root = YamlPath::root();
    pass.channels(&mut suite.channels);
    if let Some(sut) = &mut suite.sut {
        let start = root.key("sut").key("start");
        for (i, arg) in sut.start.iter_mut().enumerate() {
            pass.string(&start.index(i), arg);
        }
    }
    for (i, scenario) in suite.scenarios.iter_mut().enumerate() {
        let scenario_path = root.key("scenarios").index(i);
        for (j, step) in scenario.send.iter_mut().enumerate() {
            let step_path = scenario_path.key("send").index(j);
            if let Some(body) = &mut step.body {
                pass.json(&step_path.key("body"), body);
            }
            if let Some(text) = &mut step.text {
                pass.string(&step_path.key("text"), text);
            }
            for (header, value) in &mut step.headers {
                pass.string(&step_path.key("headers").key(header), value);
            }
        }
    }
    pass.out
}

/// Renders `env(…)` in a listener service's config: its channels and its store URL.
pub(crate) fn render_listen(
    config: &mut ListenConfig,
    vars: &Vars,
    at: &Locator<'_>,
) -> Vec<Diagnostic> {
    let mut pass = Pass {
        vars,
        at,
        out: Vec::new(),
    };
    pass.channels(&mut config.channels);
    if let Some(store) = &mut config.store {
        pass.string(&YamlPath::root().key("store"), store);
    }
    pass.out
}

struct Pass<'a> {
    vars: &'a Vars,
    at: &'a Locator<'a>,
    out: Vec<Diagnostic>,
}

impl Pass<'_> {
    /// Renders every string option of every channel.
    fn channels(&mut self, channels: &mut BTreeMap<String, ChannelSpec>) {
        for (name, spec) in channels {
            let path = YamlPath::root().key("channels").key(name);
            let Ok(mut value) = serde_json::to_value(&*spec) else {
                continue;
            };
            if self.json(&path, &mut value)
                && let Ok(rendered) = serde_json::from_value::<ChannelSpec>(value)
            {
                *spec = rendered;
            }
        }
    }

    /// Renders one string; true when it changed.
    fn string(&mut self, path: &YamlPath, s: &mut String) -> bool {
        if !s.contains("{{") {
            return false;
        }
        let Ok(template) = Template::parse(s) else {
            return false;
        };
        match template.render_env(&|name| self.vars.get(name)) {
            None => false,
            Some(Ok(rendered)) => {
                *s = rendered;
                true
            }
            Some(Err(e)) => {
                let name = match &e {
                    TemplateError::EnvUnset { name } => name.clone(),
                    _ => String::new(),
                };
                self.out.push(self.at.value_diag(
                    path,
                    format!("environment variable `{name}` is not set"),
                    format!(
                        "set it (in the environment, `--env-file FILE` or `--var {name}=…`), \
                         or give a default: `env(\"{name}\", \"…\")`"
                    ),
                ));
                false
            }
        }
    }

    /// Renders every string (and key) in a JSON value; true when any changed.
    fn json(&mut self, path: &YamlPath, v: &mut Value) -> bool {
        match v {
            Value::String(s) => self.string(path, s),
            Value::Array(items) => {
                let mut changed = false;
                for (i, item) in items.iter_mut().enumerate() {
                    changed |= self.json(&path.index(i), item);
                }
                changed
            }
            Value::Object(map) => {
                let mut changed = false;
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let child = path.key(&key);
                    let mut new_key = key.clone();
                    let key_changed = self.string(&child, &mut new_key);
                    if let Some(item) = map.get_mut(&key) {
                        changed |= self.json(&child, item);
                    }
                    if key_changed && let Some(item) = map.shift_remove(&key) {
                        map.insert(new_key, item);
                        changed = true;
                    }
                }
                changed
            }
            _ => false,
        }
    }
}

//! Which run an observation belongs to, for a listener service that knows no runs in
//! advance: the run id the message carries (a header, or a payload field), checked to be
//! a UUID as roundtrip writes them. A run the store does not hold yet (a runner with a
//! store of its own) is created on first sight; one deleted by retention under a
//! running service is created again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use roundtrip_core::model::listen::{RecordPolicy, RunRule};
use roundtrip_core::observation::{NewObservation, Observation};
use serde_json::Value;
use serde_json_path::JsonPath;

use crate::clock;
use crate::store::{RunRecord, RunStatus, Store, StoreError};
use crate::transport::Attribution;

/// What the service knows to name a run after (`RunRecord::suite`) when it creates one.
pub(crate) const REMOTE_SUITE: &str = "(recorded by roundtrip listen)";

/// Runs by id from a header or a payload field.
#[derive(Debug)]
pub(crate) struct Runs {
    rule: Rule,
    policy: RecordPolicy,
    /// Where the runs it creates say they were recorded (the config file).
    recorded_by: String,
    /// Runs known to be in the store.
    known: Mutex<HashSet<String>>,
    /// One creation at a time, so two listeners that see a new run at once create it once.
    creating: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
enum Rule {
    Header(String),
    Json(JsonPath),
}

impl Runs {
    /// The attribution of `rule`, with the service's own run `home` known already.
    pub(crate) fn new(
        rule: &RunRule,
        policy: RecordPolicy,
        home: &str,
        recorded_by: String,
    ) -> Result<Runs, String> {
        let rule = match (&rule.header, &rule.json) {
            (_, Some(path)) => {
                Rule::Json(JsonPath::parse(path).map_err(|e| format!("`run.json` `{path}`: {e}"))?)
            }
            (Some(header), None) => Rule::Header(header.to_ascii_lowercase()),
            (None, None) => Rule::Header(roundtrip_core::model::RUN_ID_HEADER.to_owned()),
        };
        Ok(Runs {
            rule,
            policy,
            recorded_by,
            known: Mutex::new(HashSet::from([home.to_owned()])),
            creating: tokio::sync::Mutex::new(()),
        })
    }

    fn is_known(&self, run: &str) -> bool {
        self.lock().contains(run)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes sure the store holds `run`: created (as running, owned by this process)
    /// unless it is there.
    async fn ensure(&self, store: &Arc<dyn Store>, run: &str) -> Result<(), StoreError> {
        let _one = self.creating.lock().await;
        if self.is_known(run) {
            return Ok(());
        }
        if store.run(run).await?.is_none() {
            let record = RunRecord {
                run_id: run.to_owned(),
                suite: REMOTE_SUITE.to_owned(),
                suite_path: self.recorded_by.clone(),
                started_at: clock::wall_now(),
                finished_at: None,
                status: RunStatus::Running,
                owner: Some(crate::owner::current()),
            };
            if let Err(e) = store.create_run(&record).await {
                // Another service (or the runner) created it meanwhile: fine.
                if store.run(run).await?.is_none() {
                    return Err(e);
                }
            }
        }
        self.lock().insert(run.to_owned());
        Ok(())
    }
}

/// Whether `s` is a run id as roundtrip writes them: a hyphenated UUID, lowercase.
fn is_run_id(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

#[async_trait]
impl Attribution for Runs {
    fn run_of(&self, headers: &[(String, String)], json: Option<&Value>) -> Option<String> {
        let found = match &self.rule {
            Rule::Header(name) => headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_owned()),
            Rule::Json(path) => json.and_then(|doc| {
                path.query(doc)
                    .first()
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }),
        };
        found.filter(|id| is_run_id(id))
    }

    fn keeps_unattributed(&self) -> bool {
        self.policy == RecordPolicy::All
    }

    async fn record(
        &self,
        store: &Arc<dyn Store>,
        observation: NewObservation,
    ) -> Result<Arc<Observation>, StoreError> {
        let run = observation.run_id.clone();
        if !self.is_known(&run) {
            self.ensure(store, &run).await?;
        }
        match store.record(observation.clone()).await {
            // Deleted by retention while known: create it again, once.
            Err(StoreError::NoSuchRun(_)) => {
                self.lock().remove(&run);
                self.ensure(store, &run).await?;
                store.record(observation).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs_of(rule: RunRule, policy: RecordPolicy) -> Runs {
        Runs::new(&rule, policy, "home", "listen.yaml".to_owned()).expect("a rule")
    }

    const RUN: &str = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

    #[test]
    fn the_run_header_names_the_run_and_anything_but_a_run_id_names_none() {
        let runs = runs_of(RunRule::default(), RecordPolicy::All);
        let with = |v: &str| vec![("x-roundtrip-run".to_owned(), v.to_owned())];
        assert_eq!(runs.run_of(&with(RUN), None).as_deref(), Some(RUN));
        for bad in [
            "",
            "run-1",
            "../etc",
            &RUN.to_uppercase(),
            &format!("{RUN}0"),
        ] {
            assert_eq!(runs.run_of(&with(bad), None), None, "{bad}");
        }
        assert_eq!(runs.run_of(&[], None), None);
        assert!(runs.keeps_unattributed());
    }

    #[test]
    fn a_json_rule_reads_the_payload() {
        let rule = RunRule {
            header: None,
            json: Some("$.meta.run".to_owned()),
        };
        let runs = runs_of(rule, RecordPolicy::CorrelatedOnly);
        let doc = serde_json::json!({ "meta": { "run": RUN } });
        assert_eq!(runs.run_of(&[], Some(&doc)).as_deref(), Some(RUN));
        assert_eq!(
            runs.run_of(&[], Some(&serde_json::json!({ "meta": 1 }))),
            None
        );
        assert!(!runs.keeps_unattributed());
    }

    #[tokio::test]
    async fn a_new_run_is_created_once_and_again_after_it_was_deleted() {
        let store = crate::store::open("sqlite::memory:")
            .await
            .expect("a store");
        let runs = runs_of(RunRule::default(), RecordPolicy::All);
        runs.ensure(&store, RUN).await.expect("created");
        runs.ensure(&store, RUN).await.expect("known");
        let record = store.run(RUN).await.expect("read").expect("the run");
        assert_eq!(record.suite, REMOTE_SUITE);
        assert_eq!(record.status, RunStatus::Running);
        // Another service (or the runner) created it: used as it is, not created twice.
        let fresh = runs_of(RunRule::default(), RecordPolicy::All);
        fresh.ensure(&store, RUN).await.expect("found");
        assert_eq!(store.runs(10).await.expect("runs").len(), 1);
    }
}

//! Sweeping harness-owned AWS resources that a killed run left behind
//! (`roundtrip aws-cleanup`).
//!
//! Listeners remove what they created when they stop, also when the run failed or was
//! interrupted. Only a process that dies outright (SIGKILL, a lost machine) leaves
//! resources behind; their names start with [`OWNED_PREFIX`] and carry their creation
//! time, so the sweep removes exactly the ones older than an age and never touches
//! anything else: SNS subscriptions delivering to such a queue, EventBridge rules (on
//! every bus) and SQS queues.

use std::time::{Duration, SystemTime};

use crate::aws::{OWNED_PREFIX, load_config, owned_created_at, owned_run_tag, service_error};

/// What to sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// The region (default: the standard configuration).
    pub region: Option<String>,
    /// The endpoint (default: the standard configuration).
    pub endpoint: Option<String>,
    /// Only resources created longer ago than this (a running listener's resources are
    /// younger than its run).
    pub older_than: Duration,
    /// Only the resources of this run (its id, as `roundtrip runs` lists it).
    pub run: Option<String>,
    /// List what would be removed, remove nothing.
    pub dry_run: bool,
}

/// One harness-owned resource found by the sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    /// `sns subscription`, `eventbridge rule` or `sqs queue`.
    pub kind: &'static str,
    /// Its name or ARN.
    pub name: String,
    /// How old it is, by its name.
    pub age: Duration,
    /// What happened: `removed`, `kept (dry run)`, or why removing failed.
    pub outcome: Result<&'static str, String>,
}

impl SweepOptions {
    /// The age of `name` when it is a harness-owned resource this sweep takes.
    fn takes(&self, name: &str) -> Option<Duration> {
        let age = SystemTime::now()
            .duration_since(owned_created_at(name)?)
            .unwrap_or_default();
        let of_run = self
            .run
            .as_deref()
            .is_none_or(|run| name.contains(&format!("-{}-", owned_run_tag(run))));
        (age >= self.older_than && of_run).then_some(age)
    }
}

/// Finds (and unless `dry_run`, removes) harness-owned resources older than
/// `older_than`. Fails only when the endpoint cannot be listed at all.
pub async fn sweep(options: &SweepOptions) -> Result<Vec<Swept>, String> {
    let config = load_config(options.region.as_deref(), options.endpoint.as_deref()).await?;
    let sns = aws_sdk_sns::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let events = aws_sdk_eventbridge::Client::new(&config);
    let mut swept = Vec::new();
    let done = |dry_run: bool| if dry_run { "kept (dry run)" } else { "removed" };

    // Subscriptions first: they deliver to the queues removed last.
    let mut pages = sns.list_subscriptions().into_paginator().items().send();
    while let Some(subscription) = pages.next().await {
        let subscription =
            subscription.map_err(|e| format!("list SNS subscriptions: {}", service_error(&e)))?;
        let (Some(arn), Some(endpoint)) =
            (subscription.subscription_arn(), subscription.endpoint())
        else {
            continue;
        };
        let queue = endpoint.rsplit(':').next().unwrap_or_default();
        let Some(age) = options.takes(queue) else {
            continue;
        };
        let outcome = if options.dry_run {
            Ok(done(true))
        } else {
            sns.unsubscribe()
                .subscription_arn(arn)
                .send()
                .await
                .map(|_| done(false))
                .map_err(|e| service_error(&e))
        };
        swept.push(Swept {
            kind: "sns subscription",
            name: arn.to_owned(),
            age,
            outcome,
        });
    }

    for bus in event_buses(&events).await? {
        for name in owned_rules(&events, &bus).await? {
            let Some(age) = options.takes(&name) else {
                continue;
            };
            let outcome = if options.dry_run {
                Ok(done(true))
            } else {
                remove_rule(&events, &bus, &name)
                    .await
                    .map(|()| done(false))
            };
            swept.push(Swept {
                kind: "eventbridge rule",
                name: format!("{bus}/{name}"),
                age,
                outcome,
            });
        }
    }

    let mut pages = sqs
        .list_queues()
        .queue_name_prefix(OWNED_PREFIX)
        .max_results(1000)
        .into_paginator()
        .send();
    let mut urls = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("list SQS queues: {}", service_error(&e)))?;
        urls.extend(page.queue_urls().iter().cloned());
    }
    for url in urls {
        let name = url.rsplit('/').next().unwrap_or_default();
        let Some(age) = options.takes(name) else {
            continue;
        };
        let outcome = if options.dry_run {
            Ok(done(true))
        } else {
            sqs.delete_queue()
                .queue_url(&url)
                .send()
                .await
                .map(|_| done(false))
                .map_err(|e| service_error(&e))
        };
        swept.push(Swept {
            kind: "sqs queue",
            name: url,
            age,
            outcome,
        });
    }
    Ok(swept)
}

/// Every event bus's name, all pages.
async fn event_buses(events: &aws_sdk_eventbridge::Client) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = events
            .list_event_buses()
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| format!("list EventBridge buses: {}", service_error(&e)))?;
        names.extend(
            page.event_buses()
                .iter()
                .filter_map(|b| b.name().map(str::to_owned)),
        );
        match page.next_token {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => return Ok(names),
        }
    }
}

/// The names of the harness-owned rules on `bus`, all pages.
async fn owned_rules(
    events: &aws_sdk_eventbridge::Client,
    bus: &str,
) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = events
            .list_rules()
            .event_bus_name(bus)
            .name_prefix(OWNED_PREFIX)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| format!("list EventBridge rules on `{bus}`: {}", service_error(&e)))?;
        names.extend(
            page.rules()
                .iter()
                .filter_map(|r| r.name().map(str::to_owned)),
        );
        match page.next_token {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => return Ok(names),
        }
    }
}

async fn remove_rule(
    events: &aws_sdk_eventbridge::Client,
    bus: &str,
    rule: &str,
) -> Result<(), String> {
    let targets = events
        .list_targets_by_rule()
        .rule(rule)
        .event_bus_name(bus)
        .send()
        .await
        .map_err(|e| service_error(&e))?;
    let ids: Vec<String> = targets
        .targets()
        .iter()
        .map(|t| t.id().to_owned())
        .collect();
    if !ids.is_empty() {
        events
            .remove_targets()
            .rule(rule)
            .event_bus_name(bus)
            .set_ids(Some(ids))
            .send()
            .await
            .map_err(|e| service_error(&e))?;
    }
    events
        .delete_rule()
        .name(rule)
        .event_bus_name(bus)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| service_error(&e))
}

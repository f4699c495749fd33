//! One claimed delivery, from claim to recorded outcome.

use std::future::Future;
use std::sync::Arc;

use opentelemetry::context::FutureExt as _;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

use super::{now, retry, Shared};
use crate::logsafe::Clean;
use crate::runtime::{Attempt, KvBackend};
use crate::store::{AsyncStore, Claim, Next, Status};
use crate::telemetry;

pub(super) async fn run_claim(ctx: Arc<Shared>, claim: Claim) {
    let Some(active) = ctx.plugins.get(&claim.plugin) else {
        // Removed between claim and run: it waits for the plugin to come back, not dies.
        release(&ctx, &claim).await;
        return;
    };

    if !claim.replay && active.spec.supersede {
        let (plugin, event) = (claim.plugin.clone(), claim.event.clone());
        match ctx.store.run(move |s| s.newer_done(&plugin, &event)).await {
            Ok(Some(by_event)) => {
                finish(&ctx, &claim, None, Next::Superseded { by_event }).await;
                return;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, delivery = %claim.delivery_id, "cannot check for a newer event; trying again later");
                release(&ctx, &claim).await;
                return;
            }
        }
    }

    let kv: Arc<dyn KvBackend> = ctx.store.clone();
    // The attempt's span (inert when telemetry is off): under the event's ingest span, and
    // the parent of the plugin's outbound calls, which the runtime opens in the current
    // OpenTelemetry context.
    let span = telemetry::attempt_span(&claim.plugin, &active.spec.version, &claim.delivery_id, &claim.event.uuid);
    let attempt = ctx
        .runtime
        .run_for(&active.loaded, &claim.event, kv, Some(&claim.delivery_id))
        .instrument(span.log_span().clone());
    let attempt = match span.context() {
        Some(cx) => with_lease(&ctx, &claim, attempt.with_context(cx.clone())).await,
        None => with_lease(&ctx, &claim, attempt).await,
    };
    let Some(attempt) = attempt else {
        tracing::warn!(
            plugin = %claim.plugin,
            delivery = %claim.delivery_id,
            "this host lost the claim while the attempt ran (its lease expired and another worker took it); the attempt was stopped and is not recorded"
        );
        return;
    };
    span.finished(&attempt.result);
    ctx.metrics.observe_attempt(&claim.plugin, attempt.duration.as_secs_f64());
    let policy = active.spec.retry.as_ref().unwrap_or(&ctx.config.retry);
    let next = retry::next_after(&attempt.result, claim.attempts, policy, now(), fastrand::f64());
    finish(&ctx, &claim, Some(attempt), next).await;
}

/// Drives the attempt while renewing the claim's lease; `None` when the claim was lost.
async fn with_lease(ctx: &Shared, claim: &Claim, attempt: impl Future<Output = Attempt>) -> Option<Attempt> {
    let every = ctx.lease / 3;
    let mut renewals = tokio::time::interval_at(Instant::now() + every, every);
    renewals.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(attempt);
    loop {
        tokio::select! {
            done = &mut attempt => return Some(done),
            _ = renewals.tick() => {
                let (id, token) = (claim.delivery_id.clone(), claim.lease_token.clone());
                let until = now() + chrono::TimeDelta::from_std(ctx.lease).unwrap_or(chrono::TimeDelta::seconds(30));
                match ctx.store.run(move |s| s.renew(&id, &token, until)).await {
                    Ok(true) => {}
                    Ok(false) => return None,
                    // The lease is still good for two more renewals; keep going.
                    Err(e) => tracing::warn!(error = %e, delivery = %claim.delivery_id, "cannot renew the lease"),
                }
            }
        }
    }
}

async fn release(ctx: &Shared, claim: &Claim) {
    let (id, token) = (claim.delivery_id.clone(), claim.lease_token.clone());
    if let Err(e) = ctx.store.run(move |s| s.release(&id, &token)).await {
        tracing::warn!(error = %e, delivery = %claim.delivery_id, "cannot release the claim; it returns when its lease expires");
    }
}

async fn finish(ctx: &Shared, claim: &Claim, attempt: Option<Attempt>, next: Next) {
    let status = match &next {
        Next::Done | Next::Superseded { .. } => Status::Done,
        Next::Retry { .. } => Status::Retrying,
        Next::Dead => Status::Dead,
    };
    let outcome = attempt.as_ref().map(|a| a.result.describe()).unwrap_or_else(|| match &next {
        Next::Superseded { by_event } => format!("superseded by event {by_event}"),
        _ => String::new(),
    });
    let (id, token, record) = (claim.delivery_id.clone(), claim.lease_token.clone(), next.clone());
    let recorded = ctx.store.run(move |s| s.complete(&id, &token, attempt.as_ref(), &record)).await;
    match recorded {
        Ok(true) => {
            tracing::info!(
                plugin = %claim.plugin,
                delivery = %claim.delivery_id,
                event = %Clean(&claim.event.uuid),
                trace_id = %telemetry::trace_id_hex(&claim.event.uuid),
                status = status.as_str(),
                outcome = %Clean(&outcome),
                "delivery attempt finished"
            );
        }
        Ok(false) => tracing::warn!(
            plugin = %claim.plugin,
            delivery = %claim.delivery_id,
            "the claim was taken over before the outcome was recorded; the new owner's attempt counts"
        ),
        Err(e) => tracing::error!(
            error = %e,
            plugin = %claim.plugin,
            delivery = %claim.delivery_id,
            "cannot record the outcome; the delivery runs again when its lease expires"
        ),
    }
}

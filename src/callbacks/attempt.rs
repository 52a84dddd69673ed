//! One delivery attempt of a leased state: the POST, reading the answer within
//! `--max-body`, and proposing what it comes to (the update, a deferral, or a failure
//! with its backoff). What a target can and cannot make the leader do is in the
//! [module docs](super).

use std::time::Duration;

use uuid::Uuid;

use super::{backoff_ms, signature, Shared, NO_VALID_ANSWER};
use crate::engine::types::State;
use crate::engine::wire::StateBody;
use crate::engine::{Error, Op};

/// One delivery attempt of the lease the state holds, unless it is the lease `last`
/// attempted; returns the token attempted.
pub(super) async fn attempt(d: &Shared, id: &str, last: Option<Uuid>) -> Option<Uuid> {
    let state = crate::engine::load_state(&d.node.reader(), id).ok()??;
    state.callback.as_ref()?;
    let token = state.lease.as_ref()?.token;
    if Some(token) == last {
        return None;
    }
    let started = tokio::time::Instant::now();
    let error = match post(d, &state, token).await {
        Ok((_, None)) => {
            defer(d, id, token).await;
            return Some(token);
        }
        Ok((status, Some(update))) => match apply_update(d, id, token, status, update).await {
            Ok(()) => {
                d.metrics.callback("applied");
                return Some(token);
            }
            Err(e) => e,
        },
        Err(e) => e,
    };
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if error == NO_VALID_ANSWER {
        // A refused connection fails in milliseconds, a silent listener at the timeout:
        // recorded at the timeout either way, the log time of the failure (in the
        // history, `updated_at`, the retry time) does not tell them apart.
        if let Some(callback) = &state.callback {
            tokio::time::sleep_until(started + Duration::from_millis(callback.timeout_ms)).await;
        }
    }
    fail(d, &state, token, error, duration_ms).await;
    Some(token)
}

/// POSTs the state; answers the status and `Some(body)`, an update to apply, or `None`,
/// a deferral. An error is `last_error`: a fixed sentence, the status at most.
async fn post(d: &Shared, state: &State, token: Uuid) -> Result<(u16, Option<StateBody>), String> {
    let callback = state
        .callback
        .as_ref()
        .ok_or("the state lost its callback")?;
    if d.config.allow.check(&callback.url).is_err() {
        return Err("the callback url is not in --callback-allow (narrowed since the PUT)".into());
    }
    let body = serde_json::to_vec(&state.view(true))
        .map_err(|_| "the state could not be encoded".to_owned())?;
    let mut request = d
        .client
        .post(&callback.url)
        .timeout(Duration::from_millis(callback.timeout_ms))
        .header("content-type", "application/json")
        .header("slct-state-id", &state.id)
        .header("slct-lease", token.to_string())
        .header("slct-attempt", (state.attempts + 1).to_string())
        .header("idempotency-key", format!("{}:{}", state.id, state.version));
    if let Some(secret) = &d.config.secret {
        let timestamp = crate::clock::now_ms();
        request = request
            .header("slct-timestamp", timestamp.to_string())
            .header("slct-signature", signature(secret, timestamp, &body));
    }
    let mut response = request.body(body).send().await.map_err(transport)?;
    let status = response.status();
    if status.is_redirection() {
        let code = status.as_u16();
        return Err(format!(
            "callback answered HTTP {code} (redirects are not followed)"
        ));
    }
    let status = status.as_u16();
    if !(200..300).contains(&status) {
        return Err(format!("callback answered HTTP {status}"));
    }
    let bytes = read_limited(&mut response, d.max_answer)
        .await
        .map_err(|e| format!("callback answered HTTP {status}; {e}"))?;
    if status == 202 || status == 204 || bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok((status, None));
    }
    match crate::json::parse::<StateBody>(&bytes) {
        Ok(update) => Ok((status, Some(update))),
        Err(e) => {
            tracing::debug!(id = %state.id, error = %e.message, "callback answered an invalid state");
            Err(format!(
                "callback answered HTTP {status} with a body that is not a valid state update"
            ))
        }
    }
}

/// A failure to get an answer, as `last_error` (see [`NO_VALID_ANSWER`]); the detail
/// goes to this node's log only.
fn transport(e: reqwest::Error) -> String {
    tracing::debug!(error = %e, "callback transport failure");
    NO_VALID_ANSWER.to_owned()
}

/// Reads an answer's body, refusing one longer than `max` bytes: by its
/// `Content-Length` before reading, else as soon as the chunks read pass `max`.
async fn read_limited(response: &mut reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let too_large = || format!("the answer is larger than {max} bytes");
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if bytes.len() + chunk.len() > max {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Applies the callback's answer (HTTP `status`) as the update under its lease. An
/// error names the engine's error code, never its message (which may quote the answer).
async fn apply_update(
    d: &Shared,
    id: &str,
    token: Uuid,
    status: u16,
    body: StateBody,
) -> Result<(), String> {
    let invalid = |e: Error| {
        tracing::debug!(id, error = %e, "callback answered an update that was refused");
        format!(
            "callback answered HTTP {status} with an update that was refused ({})",
            e.code()
        )
    };
    let callback = body.callback().map_err(invalid)?;
    if let Some(Some(callback)) = &callback {
        if d.config.allow.check(&callback.url).is_err() {
            return Err(format!(
                "callback answered HTTP {status} with a callback url not in --callback-allow"
            ));
        }
    }
    let op = Op::UpdateState {
        id: id.to_owned(),
        token,
        selects: body.selects().map_err(invalid)?,
        callback,
        priority: body.priority().map_err(invalid)?,
        max_deliveries: body.max_deliveries().map_err(invalid)?,
        retain_ms: body.retain_ms().map_err(invalid)?,
        data: body.data,
    };
    match d.node.write(op).await {
        Ok(applied) => applied.reply.map(|_| ()).map_err(invalid),
        Err(e) => {
            tracing::info!(id, error = %e, "a callback's update was not committed");
            Err(format!(
                "callback answered HTTP {status}; its update could not be committed"
            ))
        }
    }
}

/// The receiver will PUT the update itself: give it `defer_ms` from now.
async fn defer(d: &Shared, id: &str, token: Uuid) {
    d.metrics.callback("deferred");
    let op = Op::ExtendLease {
        id: id.to_owned(),
        token,
        extend_ms: d.config.defer_ms,
    };
    match d.node.write(op).await.map(|a| a.reply) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::info!(
            id,
            error = %e,
            "deferred callback: lease not extended (updated already, or lapsed)"
        ),
        Err(e) => tracing::info!(id, error = %e, "deferred callback: lease not extended"),
    }
}

/// Records a failed attempt: retry later, or give up.
async fn fail(d: &Shared, state: &State, token: Uuid, error: String, duration_ms: u64) {
    let backoff_ms = backoff_ms(state.attempts, &mut rand::thread_rng());
    let gave_up = state.attempts + 1 >= d.config.max_attempts;
    tracing::info!(id = %state.id, attempt = state.attempts + 1, %error, "callback failed");
    let op = Op::CallbackFailed {
        id: state.id.clone(),
        token,
        error,
        max_attempts: d.config.max_attempts,
        backoff_ms,
        duration_ms,
    };
    match d.node.write(op).await.map(|a| a.reply) {
        Ok(Ok(_)) => d
            .metrics
            .callback(if gave_up { "gave_up" } else { "failed" }),
        Ok(Err(e)) => tracing::debug!(id = %state.id, error = %e, "callback failure not recorded"),
        Err(e) => tracing::debug!(id = %state.id, error = %e, "callback failure not recorded"),
    }
}

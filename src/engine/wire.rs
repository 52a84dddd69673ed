//! What clients send, parsed leniently and then validated into engine types.
//!
//! Accepts the lower-case names of design.md §1 and, as aliases, the seed format of the
//! original slct (`ID`, `Data`, `Selects`, `Cases`, `Op`, `Chan`, `Callback{Type,URI}`;
//! `Op` 1 = recv, 2 = send, 3 = timer with `Chan` holding Unix seconds). Server-owned
//! fields (`status`, `results`, `version`, ...) are ignored, so a client may send back
//! the whole state it received. Every problem is an [`Error::Invalid`] naming the field.
//!
//! Any other field is refused (design.md §3): a typo such as `selectz` would otherwise
//! be dropped silently and change what the request means (a state with no selects is
//! `done`). Every body struct therefore denies unknown fields and lists the server-owned
//! ones it tolerates as [`Ignored`] fields; the API turns serde's refusal into 400
//! `invalid` naming the field (`api::extract`).
//!
//! In an update, a field the body omits keeps its value and an explicit `null` clears
//! it (design.md §3.2): so `data` and `callback` are `Option`s of what was written, with
//! `null` kept apart from absence.

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use super::data::Data;
use super::error::Error;
use super::types::{Callback, Case, Select};
use super::validate;

/// Default per-attempt timeout of a callback.
pub const DEFAULT_CALLBACK_TIMEOUT_MS: u64 = 10_000;
/// Longest retention of a `done` state: 2^53 - 1 ms, the largest integer every JSON
/// client reads exactly.
pub const MAX_RETAIN_MS: u64 = (1 << 53) - 1;
/// Longest per-attempt timeout of a callback: a minute, so that one attempt holds a
/// slot of its target host (and the lease) for no longer.
pub const MAX_CALLBACK_TIMEOUT_MS: u64 = 60_000;

/// A server-owned field a client may send back: accepted and ignored.
pub type Ignored = Option<IgnoredAny>;

/// The body of `PUT /state/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateBody {
    /// Opaque process data; `None` if absent (an explicit `null` is `Some`).
    #[serde(default, alias = "Data", deserialize_with = "present")]
    pub data: Option<Data>,
    /// Selects (blocked ones unchanged, new ones to register); `None` if absent.
    #[serde(default, alias = "Selects")]
    pub selects: Option<Vec<SelectBody>>,
    /// Callback: `None` if absent, `Some(None)` if `null`.
    #[serde(default, alias = "Callback", deserialize_with = "present")]
    pub callback: Option<Option<CallbackBody>>,
    /// The lease under which this is an update.
    #[serde(default)]
    pub lease: Option<LeaseBody>,
    /// 0–9; `None` if absent.
    #[serde(default)]
    pub priority: Option<i64>,
    /// Deliveries before the state turns `failed` (0: no limit); `None` if absent.
    #[serde(default)]
    pub max_deliveries: Option<i64>,
    /// Milliseconds a `done` state is kept (0: for ever); `None` if absent.
    #[serde(default)]
    pub retain_ms: Option<i64>,
    /// Server-owned: the id is the path's (the seed wrote `ID`).
    #[serde(default, rename = "id", alias = "ID")]
    _id: Ignored,
    /// Server-owned.
    #[serde(default, rename = "status")]
    _status: Ignored,
    /// Server-owned: results are consumed by the update, not written.
    #[serde(default, rename = "results", alias = "Results")]
    _results: Ignored,
    /// Server-owned.
    #[serde(default, rename = "version")]
    _version: Ignored,
    /// Server-owned.
    #[serde(default, rename = "created_at")]
    _created_at: Ignored,
    /// Server-owned.
    #[serde(default, rename = "updated_at")]
    _updated_at: Ignored,
    /// Server-owned.
    #[serde(default, rename = "attempts")]
    _attempts: Ignored,
    /// Server-owned.
    #[serde(default, rename = "deliveries")]
    _deliveries: Ignored,
    /// Server-owned.
    #[serde(default, rename = "last_error")]
    _last_error: Ignored,
    /// Server-owned: changed by `POST /state/{id}/pause` and `/resume`.
    #[serde(default, rename = "paused")]
    _paused: Ignored,
}

/// `{"token": "<uuid>"}` in a state body (the lease a client received, sent back whole,
/// is fine too).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseBody {
    /// The token, validated as a UUID by [`parse_token`].
    #[serde(default)]
    pub token: Option<String>,
    /// Server-owned.
    #[serde(default, rename = "expires_at")]
    _expires_at: Ignored,
    /// Server-owned.
    #[serde(default, rename = "granted_at")]
    _granted_at: Ignored,
}

/// A select as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectBody {
    /// Select id.
    #[serde(default, alias = "ID", alias = "Id")]
    pub id: Option<String>,
    /// The cases, in the order a client lists them (and results name them by index).
    #[serde(default, alias = "Cases")]
    pub cases: Option<Vec<CaseBody>>,
}

/// A case as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseBody {
    /// `recv|send|timer|default` or seed codes 1|2|3.
    #[serde(default, alias = "Op")]
    pub op: Option<OpName>,
    /// Channel (seed timers: Unix seconds).
    #[serde(default, alias = "Chan")]
    pub chan: Option<String>,
    /// Value of a send; `null` is a value, absence is not.
    #[serde(default, alias = "Data", deserialize_with = "present")]
    pub data: Option<Data>,
    /// Timer deadline (Unix ms).
    #[serde(default)]
    pub at: Option<u64>,
    /// Timer delay from registration.
    #[serde(default)]
    pub after_ms: Option<u64>,
}

/// An op by name or by seed code.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OpName {
    /// `"recv"`, ...
    Name(String),
    /// 1, 2, 3.
    Code(i64),
}

/// A callback as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackBody {
    /// URL to POST to.
    #[serde(default, alias = "URI", alias = "URL", alias = "uri")]
    pub url: Option<String>,
    /// Seed callback type (1 = HTTP).
    #[serde(default, rename = "Type", alias = "type")]
    pub kind: Option<i64>,
    /// Per-attempt timeout.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Deserializes a field that is present (even as `null`) into `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl StateBody {
    /// Validated selects; `None` if the body has none.
    pub fn selects(&self) -> Result<Option<Vec<Select>>, Error> {
        let Some(written) = &self.selects else {
            return Ok(None);
        };
        let selects = written
            .iter()
            .map(SelectBody::to_select)
            .collect::<Result<Vec<_>, _>>()?;
        validate::selects(&selects)?;
        Ok(Some(selects))
    }

    /// Validated callback: `None` if absent, `Some(None)` if `null`.
    pub fn callback(&self) -> Result<Option<Option<Callback>>, Error> {
        self.callback
            .as_ref()
            .map(|c| c.as_ref().map(CallbackBody::to_callback).transpose())
            .transpose()
    }

    /// Validated priority; `None` if absent.
    pub fn priority(&self) -> Result<Option<u8>, Error> {
        let Some(p) = self.priority else {
            return Ok(None);
        };
        let p = u8::try_from(p).map_err(|_| Error::Invalid("priority must be 0 to 9".into()))?;
        validate::priority(p).map(|()| Some(p))
    }

    /// Validated delivery limit; `None` if absent.
    pub fn max_deliveries(&self) -> Result<Option<u32>, Error> {
        self.max_deliveries
            .map(|n| {
                u32::try_from(n).map_err(|_| {
                    Error::Invalid(format!(
                        "max_deliveries must be 0 (no limit) to {}",
                        u32::MAX
                    ))
                })
            })
            .transpose()
    }

    /// Validated retention; `None` if absent.
    pub fn retain_ms(&self) -> Result<Option<u64>, Error> {
        self.retain_ms
            .map(|ms| match u64::try_from(ms) {
                Ok(ms) if ms <= MAX_RETAIN_MS => Ok(ms),
                _ => Err(Error::Invalid(format!(
                    "retain_ms must be 0 (keep) to {MAX_RETAIN_MS}"
                ))),
            })
            .transpose()
    }

    /// The lease token in the body, if any.
    pub fn token(&self) -> Result<Option<Uuid>, Error> {
        match self.lease.as_ref().and_then(|l| l.token.as_deref()) {
            None => Ok(None),
            Some(token) => parse_token(token).map(Some),
        }
    }
}

/// A lease token: must be a UUID.
pub fn parse_token(token: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(token.trim()).map_err(|_| Error::Invalid("lease token must be a UUID".into()))
}

impl SelectBody {
    fn to_select(&self) -> Result<Select, Error> {
        let id = self
            .id
            .clone()
            .ok_or_else(|| Error::Invalid("every select needs an id".into()))?;
        let cases = self
            .cases
            .iter()
            .flatten()
            .map(|c| c.to_case(&id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Select::new(id, cases))
    }
}

impl CaseBody {
    fn to_case(&self, select: &str) -> Result<Case, Error> {
        let invalid = |what: &str| Error::Invalid(format!("select {select:?}: {what}"));
        let chan = || {
            self.chan
                .clone()
                .ok_or_else(|| invalid("a recv or send case needs chan"))
        };
        let op = match &self.op {
            None => return Err(invalid("every case needs an op")),
            Some(OpName::Name(name)) => name.as_str(),
            Some(OpName::Code(1)) => "recv",
            Some(OpName::Code(2)) => "send",
            Some(OpName::Code(3)) => "timer",
            Some(OpName::Code(code)) => return Err(invalid(&format!("unknown op {code}"))),
        };
        match op {
            "recv" => Ok(Case::Recv { chan: chan()? }),
            "send" => Ok(Case::Send {
                chan: chan()?,
                data: self
                    .data
                    .clone()
                    .ok_or_else(|| invalid("a send case needs data"))?,
            }),
            "timer" => self.timer().map_err(|e| invalid(&e)),
            "default" => Ok(Case::Default),
            other => Err(invalid(&format!("unknown op {other:?}"))),
        }
    }

    fn timer(&self) -> Result<Case, String> {
        match (self.at, self.after_ms, &self.chan) {
            (Some(at), None, _) => Ok(Case::Timer { at, after_ms: None }),
            (None, Some(ms), _) => Ok(Case::Timer {
                at: 0,
                after_ms: Some(ms),
            }),
            // A relative timer as the server shows it (`at` is the deadline fixed when
            // it was registered), sent back: the relative form is the timer.
            (Some(at), Some(ms), _) => Ok(Case::Timer {
                at,
                after_ms: Some(ms),
            }),
            (None, None, Some(secs)) => secs
                .trim()
                .parse::<u64>()
                .ok()
                .and_then(|s| s.checked_mul(1000))
                .map(|at| Case::Timer { at, after_ms: None })
                .ok_or_else(|| "a seed timer's Chan must hold Unix seconds".into()),
            (None, None, None) => Err("a timer case needs at or after_ms".into()),
        }
    }
}

impl CallbackBody {
    fn to_callback(&self) -> Result<Callback, Error> {
        if self.kind.is_some_and(|k| k != 1) {
            return Err(Error::Invalid("callback Type must be 1 (HTTP)".into()));
        }
        let url = self
            .url
            .clone()
            .ok_or_else(|| Error::Invalid("callback needs a url".into()))?;
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || url.len() > 2048 || url.chars().any(char::is_control) {
            return Err(Error::Invalid("callback url must be an http(s) URL".into()));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_CALLBACK_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > MAX_CALLBACK_TIMEOUT_MS {
            return Err(Error::Invalid(format!(
                "callback timeout_ms must be 1 to {MAX_CALLBACK_TIMEOUT_MS}"
            )));
        }
        Ok(Callback { url, timeout_ms })
    }
}

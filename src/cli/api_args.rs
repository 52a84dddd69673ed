//! The flags of `serve` and `dev` that shape the HTTP API and callback delivery.

use clap::Args;

use crate::api::states::MAX_LEASE_MS;
use crate::api::{ApiConfig, DEFAULT_MAX_BODY};
use crate::callbacks::{
    CallbackConfig, DEFAULT_CONCURRENCY, DEFAULT_DEFER_MS, DEFAULT_MAX_ATTEMPTS,
};

/// API flags.
#[derive(Clone, Debug, Args)]
pub struct ApiArgs {
    /// Require `Authorization: Bearer <token>` on the client API.
    #[arg(long, env = "SLCT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Largest request body in bytes (larger: 413).
    #[arg(long, env = "SLCT_MAX_BODY", default_value_t = DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Sign callback bodies: `Slct-Signature: sha256=<hex HMAC-SHA256>`.
    #[arg(long, env = "SLCT_CALLBACK_SECRET", hide_env_values = true)]
    pub callback_secret: Option<String>,
    /// Failed callback attempts before a state turns `failed`.
    #[arg(long, env = "SLCT_CALLBACK_MAX_ATTEMPTS", default_value_t = DEFAULT_MAX_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub callback_max_attempts: u32,
    /// Callback attempts in flight at once.
    #[arg(long, env = "SLCT_CALLBACK_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub callback_concurrency: usize,
    /// After a callback answers 202 or 204, milliseconds the receiver has to PUT the
    /// update with its lease.
    #[arg(long, env = "SLCT_CALLBACK_DEFER_MS", default_value_t = DEFAULT_DEFER_MS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_LEASE_MS))]
    pub callback_defer_ms: u64,
}

impl ApiArgs {
    /// The API settings these flags ask for.
    pub fn config(&self) -> ApiConfig {
        ApiConfig {
            max_body: self.max_body,
            token: self.token.clone().filter(|t| !t.is_empty()),
            callbacks: CallbackConfig {
                secret: self.callback_secret.clone().filter(|s| !s.is_empty()),
                max_attempts: self.callback_max_attempts,
                concurrency: self.callback_concurrency,
                defer_ms: self.callback_defer_ms,
            },
            ..ApiConfig::default()
        }
    }
}

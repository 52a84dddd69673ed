//! The API side of `--callback-allow` (see [`crate::callbacks::allow`]): a PUT that names
//! a callback target outside the list is refused before anything is proposed.

use axum::http::StatusCode;

use super::error::{ApiError, ApiResult};
use crate::callbacks::allow::CallbackAllow;

/// 422 `callback_not_allowed` unless `url` is an allowed callback target. Call it for
/// the callback of every `PUT /state/{id}` (create or update) that sets one.
pub fn check_callback(allow: &CallbackAllow, url: &str) -> ApiResult<()> {
    allow.check(url).map_err(|why| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "callback_not_allowed",
            why,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_outside_the_list_is_422() {
        let allow: CallbackAllow = "10.0.0.0/8,hooks.example.com".parse().unwrap();
        assert!(check_callback(&allow, "http://10.9.9.9/cb").is_ok());
        assert!(check_callback(&allow, "https://hooks.example.com/cb").is_ok());
        let refused = check_callback(&allow, "http://169.254.169.254/latest").unwrap_err();
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(refused.code, "callback_not_allowed");
        assert!(refused.message.contains("169.254.169.254"));
        assert!(check_callback(&CallbackAllow::default(), "http://anything/").is_ok());
    }
}

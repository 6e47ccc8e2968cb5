//! Kong: decK declarative files, DB-less `GET /config` and the Admin API.

use super::{Capture, GatewayOptions};
use crate::error::{Error, Result};

/// Captures Kong as `opts` says.
///
/// # Errors
/// See [`super::capture`].
pub fn capture(opts: &GatewayOptions) -> Result<Capture> {
    Err(Error::InvalidInput(format!(
        "kong capture is not built yet ({opts:?})"
    )))
}

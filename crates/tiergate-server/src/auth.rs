//! Bearer-token checks for the gRPC services.
//!
//! Tokens are compared in constant time so that response timing reveals nothing about how much
//! of a guess was right. A service with no token configured is open; `serve` refuses to expose
//! an open admin service on a non-loopback address.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// An interceptor that requires `authorization: Bearer <token>` when a token is set.
#[derive(Clone)]
pub struct BearerAuth {
    token: Option<Arc<[u8]>>,
    realm: &'static str,
}

impl BearerAuth {
    /// Requires `token` (if any) on every call; `realm` names the service in errors.
    pub fn new(token: Option<&str>, realm: &'static str) -> Self {
        Self {
            token: token.map(|t| Arc::from(t.as_bytes())),
            realm,
        }
    }

    /// Checks one call's metadata.
    #[allow(clippy::result_large_err)]
    pub fn check<T>(&self, req: Request<T>) -> Result<Request<T>, Status> {
        let Some(expected) = &self.token else {
            return Ok(req);
        };
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "{} calls need `authorization: Bearer <token>` metadata",
                    self.realm
                ))
            })?;
        if bool::from(presented.as_bytes().ct_eq(expected)) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(format!(
                "wrong {} token",
                self.realm
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a.parse().unwrap());
        }
        r
    }

    #[test]
    fn requires_the_exact_token() {
        let a = BearerAuth::new(Some("s3cret-token-0123"), "admin");
        assert!(a.check(req(Some("Bearer s3cret-token-0123"))).is_ok());
        assert_eq!(
            a.check(req(Some("Bearer s3cret-token-0124")))
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert!(a.check(req(Some("s3cret-token-0123"))).is_err());
        assert!(a.check(req(None)).is_err());
        assert!(BearerAuth::new(None, "admin").check(req(None)).is_ok());
    }
}

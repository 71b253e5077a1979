//! A request over `server.max_request_bytes` answers RESOURCE_EXHAUSTED, saying the limit.
//!
//! gRPC's status-code guide gives RESOURCE_EXHAUSTED to a message larger than the peer accepts,
//! and that is what other gRPC servers send; tonic 0.14's decoder says OUT_OF_RANGE ("decoded
//! message length too large"), which clients read as "a value out of range" and do not handle
//! as a size problem. The decoder runs inside the generated server, before any handler, so the
//! answer is rewritten on its way out: [`TooLarge`] wraps a generated service and turns exactly
//! that status (the decoder leaves it in the response's extensions) into RESOURCE_EXHAUSTED
//! with tiergate's own message. The handlers never answer OUT_OF_RANGE themselves, and the
//! decoder stops at the 5-byte frame header, so an oversized body is never read, let alone
//! buffered.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::{Code, Status};

/// What tonic's decoder says of a message over the limit (it answers OUT_OF_RANGE).
const DECODER_TOO_LARGE: &str = "decoded message length too large";

/// A generated gRPC service whose oversized requests answer RESOURCE_EXHAUSTED.
///
/// Some methods may have a larger limit than the rest (a campaign plan carries up to 100,000
/// recipients, a batch up to 1,000 sends; a send carries one): their calls go to copies of the
/// service, each built with its method's limit, and the rest keep the small one.
#[derive(Debug, Clone)]
pub struct TooLarge<S> {
    inner: S,
    limit: Limit,
    wide: Vec<Wide<S>>,
}

/// A limit and the config key that sets it (repeated in the message).
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Bytes.
    pub bytes: usize,
    /// The config key, e.g. `server.max_request_bytes`.
    pub key: &'static str,
}

#[derive(Debug, Clone)]
struct Wide<S> {
    path: &'static str,
    inner: S,
    limit: Limit,
}

impl<S> TooLarge<S> {
    /// Wraps `inner`, which was given `max_decoding_message_size(limit)`; `limit` is only
    /// repeated in the message.
    pub fn new(inner: S, limit: usize) -> Self {
        Self {
            inner,
            limit: Limit {
                bytes: limit,
                key: "server.max_request_bytes",
            },
            wide: Vec::new(),
        }
    }

    /// Sends calls to `path` (`/package.Service/Method`) to `inner`, a copy of the service
    /// given `max_decoding_message_size(limit.bytes)`. Each method may have its own.
    pub fn with_method(mut self, path: &'static str, inner: S, limit: Limit) -> Self {
        self.wide.retain(|w| w.path != path);
        self.wide.push(Wide { path, inner, limit });
        self
    }
}

impl<S: NamedService> NamedService for TooLarge<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for TooLarge<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Unpin,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Rewrite<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        for w in &mut self.wide {
            match w.inner.poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        if let Some(w) = self.wide.iter_mut().find(|w| w.path == path) {
            return Rewrite {
                inner: w.inner.call(req),
                limit: w.limit,
            };
        }
        Rewrite {
            inner: self.inner.call(req),
            limit: self.limit,
        }
    }
}

/// The inner service's answer, rewritten when it is the decoder's size error. The generated
/// servers' futures are boxed, hence `Unpin`: no projection (and no allocation) needed here.
#[derive(Debug)]
pub struct Rewrite<F> {
    inner: F,
    limit: Limit,
}

impl<F, E> Future for Rewrite<F>
where
    F: Future<Output = Result<http::Response<Body>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let limit = self.limit;
        Pin::new(&mut self.inner)
            .poll(cx)
            .map_ok(|r| rewrite(r, limit))
    }
}

/// `response`, or RESOURCE_EXHAUSTED in its place when the decoder refused the request's size.
fn rewrite(response: http::Response<Body>, limit: Limit) -> http::Response<Body> {
    match response.extensions().get::<Status>() {
        Some(s) if s.code() == Code::OutOfRange && s.message().contains(DECODER_TOO_LARGE) => {
            too_large(found(s.message()), limit).into_http()
        }
        _ => response,
    }
}

/// The status a client sees for a request of `found` bytes (when the decoder said) over `limit`.
pub fn too_large(found: Option<u64>, limit: Limit) -> Status {
    let size = found.map_or_else(String::new, |n| format!(" of {n} bytes"));
    Status::resource_exhausted(format!(
        "request{size} too large: the limit is {} bytes ({})",
        limit.bytes, limit.key
    ))
}

/// The size in tonic's message ("… found 70000 bytes, the limit is …"), if it is there.
fn found(message: &str) -> Option<u64> {
    let rest = &message[message.find("found ")? + "found ".len()..];
    rest.split(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(bytes: usize) -> Limit {
        Limit {
            bytes,
            key: "server.max_request_bytes",
        }
    }

    fn status_of(r: &http::Response<Body>) -> Option<&Status> {
        r.extensions().get::<Status>()
    }

    #[test]
    fn the_decoder_s_size_error_becomes_resource_exhausted() {
        // tonic 0.14's exact words (codec/decode.rs)
        let decoder = Status::out_of_range(
            "Error, decoded message length too large: found 70000 bytes, the limit is: 65536 bytes",
        );
        let r = rewrite(decoder.into_http(), small(65_536));
        let s = status_of(&r).unwrap();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "request of 70000 bytes too large: the limit is 65536 bytes (server.max_request_bytes)"
        );
        assert_eq!(r.headers()["grpc-status"], "8");
    }

    #[test]
    fn other_answers_pass_unchanged() {
        for s in [
            Status::out_of_range("some other range"),
            Status::invalid_argument("decoded message length too large"),
            Status::unauthenticated("no token"),
        ] {
            let code = s.code();
            let r = rewrite(s.into_http(), small(10));
            assert_eq!(status_of(&r).unwrap().code(), code);
        }
        let ok = http::Response::new(Body::default());
        assert!(status_of(&rewrite(ok, small(10))).is_none());
    }

    /// A service that answers every call with the decoder's size error, so the limit in the
    /// rewritten answer tells which copy took the call.
    #[derive(Debug, Clone)]
    struct Refuses;

    impl<B> Service<http::Request<B>> for Refuses {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<http::Response<Body>, Self::Error>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: http::Request<B>) -> Self::Future {
            let s = Status::out_of_range(
                "Error, decoded message length too large: found 9 bytes, the limit is: 5 bytes",
            );
            std::future::ready(Ok(s.into_http()))
        }
    }

    #[tokio::test]
    async fn each_method_goes_to_its_own_copy_and_limit() {
        let limit = |bytes, key| Limit { bytes, key };
        let mut svc = TooLarge::new(Refuses, 64)
            .with_method(
                "/p.S/Plan",
                Refuses,
                limit(4_000, "server.max_plan_request_bytes"),
            )
            .with_method(
                "/p.S/Batch",
                Refuses,
                limit(1_000, "server.max_batch_request_bytes"),
            );
        for (path, want) in [
            (
                "/p.S/Plan",
                "the limit is 4000 bytes (server.max_plan_request_bytes)",
            ),
            (
                "/p.S/Batch",
                "the limit is 1000 bytes (server.max_batch_request_bytes)",
            ),
            (
                "/p.S/Acquire",
                "the limit is 64 bytes (server.max_request_bytes)",
            ),
        ] {
            let req = http::Request::builder().uri(path).body(()).unwrap();
            let r = svc.call(req).await.unwrap();
            let s = status_of(&r).unwrap();
            assert_eq!(s.code(), Code::ResourceExhausted);
            assert!(s.message().ends_with(want), "{path}: {}", s.message());
        }
    }

    #[test]
    fn the_size_is_optional_in_the_message() {
        assert_eq!(found("found 12 bytes, the limit"), Some(12));
        assert_eq!(found("no size here"), None);
        assert_eq!(found("found many bytes"), None);
        assert_eq!(
            too_large(None, small(5)).message(),
            "request too large: the limit is 5 bytes (server.max_request_bytes)"
        );
    }
}

//! Response bodies: whole, or streamed the way the body faults need.
//!
//! Every body announces its full length, so hyper sends `Content-Length` and a client knows how
//! much is missing when a fault makes the body slow or short.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Bytes, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// What a huge body is made of: static, so that a body of any size costs no memory.
static FILLER: [u8; 1 << 16] = [b'x'; 1 << 16];
/// A huge body is `{"padding":"xxx…"}`: valid JSON, however large.
const HUGE_HEAD: &[u8] = b"{\"padding\":\"";
const HUGE_TAIL: &[u8] = b"\"}";

/// A response body.
pub(crate) struct Body {
    len: u64,
    kind: Kind,
}

enum Kind {
    /// Sent in one piece.
    Full(Option<Bytes>),
    /// `rest` in pieces of `chunk` bytes, one after each `interval`.
    Trickle {
        rest: Bytes,
        chunk: usize,
        interval: Duration,
        sleep: Pin<Box<Sleep>>,
    },
    /// `head`, then `filler` bytes of [`FILLER`], then `tail`.
    Huge {
        head: Option<Bytes>,
        filler: u64,
        tail: Option<Bytes>,
    },
    /// `part` (the first half of a body of `len` bytes), then a failure, which makes hyper close
    /// the connection short of the announced length.
    Truncated { part: Option<Bytes>, flushed: bool },
}

impl Body {
    /// `data`, sent at once.
    pub(crate) fn full(data: impl Into<Bytes>) -> Body {
        let data = data.into();
        Body {
            len: data.len() as u64,
            kind: Kind::Full(Some(data)),
        }
    }

    /// This body's bytes when it is sent at once, so that a fault can reshape it.
    pub(crate) fn bytes(&self) -> Option<Bytes> {
        match &self.kind {
            Kind::Full(data) => Some(data.clone().unwrap_or_default()),
            _ => None,
        }
    }

    /// `data`, `chunk` bytes (at least one) after each `interval`.
    pub(crate) fn trickle(data: Bytes, chunk: usize, interval: Duration) -> Body {
        Body {
            len: data.len() as u64,
            kind: Kind::Trickle {
                rest: data,
                chunk: chunk.max(1),
                interval,
                sleep: Box::pin(tokio::time::sleep(interval)),
            },
        }
    }

    /// A JSON document of exactly `bytes` bytes, generated while it is sent. Below the size of
    /// the smallest such document it is that many spaces.
    pub(crate) fn huge_json(bytes: u64) -> Body {
        let frame = (HUGE_HEAD.len() + HUGE_TAIL.len()) as u64;
        if bytes < frame {
            // Smaller than the frame, so it fits in memory.
            return Body::full(vec![b' '; bytes as usize]);
        }
        Body {
            len: bytes,
            kind: Kind::Huge {
                head: Some(Bytes::from_static(HUGE_HEAD)),
                filler: bytes - frame,
                tail: Some(Bytes::from_static(HUGE_TAIL)),
            },
        }
    }

    /// Announces all of `data` but sends only its first half.
    pub(crate) fn truncated(data: Bytes) -> Body {
        let len = data.len() as u64;
        let part = data.slice(..data.len() / 2);
        Body {
            len,
            kind: Kind::Truncated {
                part: Some(part),
                flushed: false,
            },
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let data = |bytes: Bytes| Poll::Ready(Some(Ok(Frame::data(bytes))));
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Trickle {
                rest,
                chunk,
                interval,
                sleep,
            } => {
                if rest.is_empty() {
                    return Poll::Ready(None);
                }
                ready!(sleep.as_mut().poll(cx));
                sleep.as_mut().reset(Instant::now() + *interval);
                data(rest.split_to((*chunk).min(rest.len())))
            }
            Kind::Huge { head, filler, tail } => {
                if let Some(head) = head.take() {
                    return data(head);
                }
                if *filler > 0 {
                    let n = usize::try_from(*filler).map_or(FILLER.len(), |f| f.min(FILLER.len()));
                    *filler -= n as u64;
                    return data(Bytes::from_static(&FILLER[..n]));
                }
                Poll::Ready(tail.take().map(|t| Ok(Frame::data(t))))
            }
            Kind::Truncated { part, flushed } => {
                if let Some(part) = part.take().filter(|p| !p.is_empty()) {
                    return data(part);
                }
                if !*flushed {
                    // Pending once, so that hyper writes the head and the part out before the
                    // failure makes it drop the connection.
                    *flushed = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(io::Error::other(
                    "body truncated by an injected fault",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Kind::Trickle { rest, .. } => rest.is_empty(),
            Kind::Huge { tail, .. } => tail.is_none(),
            Kind::Truncated { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;

    async fn collect(mut body: Body) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            match frame {
                Ok(frame) => out.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d)),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn huge_json_has_the_exact_size_and_parses() {
        for size in [0u64, 5, 14, 15, 70_000, 200_003] {
            let body = Body::huge_json(size);
            assert_eq!(body.size_hint().exact(), Some(size));
            let (bytes, error) = collect(body).await;
            assert!(error.is_none());
            assert_eq!(bytes.len() as u64, size);
            if size >= 14 {
                assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_ok());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn trickle_sends_everything_in_chunks() {
        let started = Instant::now();
        let body = Body::trickle(Bytes::from_static(b"0123456789"), 3, Duration::from_secs(1));
        assert_eq!(body.size_hint().exact(), Some(10));
        let (bytes, error) = collect(body).await;
        assert!(error.is_none());
        assert_eq!(bytes, b"0123456789");
        // Four pieces, each after an interval.
        assert_eq!(started.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test]
    async fn truncated_announces_everything_and_fails_after_half() {
        let body = Body::truncated(Bytes::from_static(b"0123456789"));
        assert_eq!(body.size_hint().exact(), Some(10));
        let (bytes, error) = collect(body).await;
        assert_eq!(bytes, b"01234");
        assert!(error.is_some());
    }
}

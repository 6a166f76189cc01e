//! Outbound HTTP over wasi:http, for plugins granted `http` hosts (an external IPAM talking
//! to NetBox or Infoblox). Blocking, as plugin calls are: the engine's per-call deadline
//! covers the wait, and a host that was not granted is refused before a packet leaves.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

/// A response: status and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The largest body read (1 MiB): an answer that big is not an IPAM's.
pub const MAX_BODY: usize = 1 << 20;

fn method(m: &str) -> Method {
    match m {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        other => Method::Other(other.into()),
    }
}

fn code(e: ErrorCode) -> String {
    match e {
        ErrorCode::InternalError(Some(m)) => m,
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::ConnectionTimeout => "connection timed out".into(),
        ErrorCode::ConnectionReadTimeout => "timed out reading the answer".into(),
        ErrorCode::ConnectionTerminated => "the connection was closed".into(),
        ErrorCode::DnsError(_) => "the host name does not resolve".into(),
        other => format!("{other:?}"),
    }
}

/// `method` `http://authority/path` with `headers` and `body`. Plain HTTP (a NetBox on the
/// host's loopback or LAN); `https` when `tls`.
pub fn request(
    tls: bool,
    verb: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, String> {
    let fields = Fields::new();
    // A body's length, given: without it the body goes chunked, which WSGI servers (NetBox's
    // gunicorn and Django) read as empty.
    if let Some(b) = body {
        fields
            .append("content-length", b.len().to_string().as_bytes())
            .map_err(|e| format!("header content-length: {e:?}"))?;
    }
    for (k, v) in headers {
        fields
            .append(k, v.as_bytes())
            .map_err(|e| format!("header {k}: {e:?}"))?;
    }
    let req = OutgoingRequest::new(fields);
    req.set_method(&method(verb))
        .map_err(|_| format!("method {verb}"))?;
    req.set_scheme(Some(if tls { &Scheme::Https } else { &Scheme::Http }))
        .map_err(|_| "scheme".to_string())?;
    req.set_authority(Some(authority))
        .map_err(|_| format!("authority {authority:?}"))?;
    req.set_path_with_query(Some(path))
        .map_err(|_| format!("path {path:?}"))?;
    let out = req.body().map_err(|_| "request body".to_string())?;
    if let Some(b) = body {
        let stream = out.write().map_err(|_| "request body stream".to_string())?;
        for chunk in b.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("writing the request: {e:?}"))?;
        }
        drop(stream);
    }
    let fut = outgoing_handler::handle(req, None).map_err(code)?;
    OutgoingBody::finish(out, None).map_err(code)?;
    fut.subscribe().block();
    let resp = match fut.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(code(e)),
        Some(Err(())) | None => return Err("no response".into()),
    };
    let status = resp.status();
    let incoming = resp.consume().map_err(|_| "response body".to_string())?;
    let stream = incoming
        .stream()
        .map_err(|_| "response body stream".to_string())?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(format!("the response is over {MAX_BODY} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(e) => return Err(format!("reading the response: {e:?}")),
        }
    }
    Ok(Response { status, body })
}

/// GET over plain HTTP.
pub fn get(authority: &str, path: &str) -> Result<Response, String> {
    request(false, "GET", authority, path, &[], None)
}

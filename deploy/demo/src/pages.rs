//! The demo's two web servers: an upstream that shows what Gatehouse told it about the user,
//! and a login page standing in for an authentication module.

use std::convert::Infallible;

use bytes::Bytes;
use gatehouse_proto::v1 as pb;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use tokio::net::TcpListener;

type Page = Response<Full<Bytes>>;

async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Page> + Send,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(request).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn html(status: StatusCode, body: String) -> Page {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = "text/html; charset=utf-8".parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The upstream: a page listing the identity headers it received.
pub async fn serve_upstream(listener: TcpListener) {
    serve(listener, |request: Request<Incoming>| async move {
        let mut rows = String::new();
        for (name, value) in request.headers() {
            let name = name.as_str();
            let highlight = name.starts_with("x-qlik") || name.starts_with("x-forwarded");
            rows.push_str(&format!(
                "<tr{}><td>{}</td><td>{}</td></tr>",
                if highlight { " class=\"id\"" } else { "" },
                escape(name),
                escape(value.to_str().unwrap_or("<binary>"))
            ));
        }
        html(
            StatusCode::OK,
            format!(
                "<!doctype html><title>Demo upstream</title>\
                 <style>body{{font-family:sans-serif;margin:2em}}td{{padding:2px 8px;font-family:monospace}}\
                 .id{{background:#e6ffe6;font-weight:bold}}</style>\
                 <h1>Demo upstream</h1><p>Gatehouse let you in. This is what it forwarded for <code>{}</code>:</p>\
                 <table>{rows}</table>\
                 <p><button onclick=\"fetch('/qps/user',{{method:'DELETE'}}).then(()=>location.reload())\">Log out</button>\
                 &nbsp;<a href=\"/qps/user\">/qps/user</a> (who am I)</p>",
                escape(&request.uri().to_string())
            ),
        )
    })
    .await;
}

/// The login page: shows a form, then asks the control plane for a ticket for whatever
/// user was typed and sends the browser back with it.
pub async fn serve_login(listener: TcpListener, grpc: String) {
    serve(listener, move |request: Request<Incoming>| {
        let grpc = grpc.clone();
        async move {
            match (request.method(), request.uri().path()) {
                (&Method::GET, "/login") => {
                    let query = request.uri().query().unwrap_or_default().to_owned();
                    let target_id = form_value(&query, "targetId").unwrap_or_default();
                    let rest = form_value(&query, "proxyRestUri").unwrap_or_default();
                    html(
                        StatusCode::OK,
                        format!(
                            "<!doctype html><title>Demo login</title>\
                             <style>body{{font-family:sans-serif;margin:2em}}.warn{{color:#b00}}</style>\
                             <h1>Demo login</h1><p class=\"warn\">DEMO ONLY: no password, any name is believed.</p>\
                             <form method=\"post\" action=\"/login\">\
                             <input type=\"hidden\" name=\"targetId\" value=\"{}\">\
                             <input type=\"hidden\" name=\"proxyRestUri\" value=\"{}\">\
                             <p>User directory <input name=\"directory\" value=\"DEMO\"></p>\
                             <p>User id <input name=\"user\" autofocus required></p>\
                             <p>Group <input name=\"group\" value=\"everyone\"></p>\
                             <button>Log in</button></form>",
                            escape(&target_id),
                            escape(&rest)
                        ),
                    )
                }
                (&Method::POST, "/login") => {
                    let Ok(body) = Limited::new(request.into_body(), 16 * 1024).collect().await else {
                        return html(StatusCode::BAD_REQUEST, "form too large".into());
                    };
                    let form = String::from_utf8_lossy(&body.to_bytes()).into_owned();
                    issue_ticket(&grpc, &form).await
                }
                _ => html(StatusCode::NOT_FOUND, "not found".into()),
            }
        }
    })
    .await;
}

async fn issue_ticket(grpc: &str, form: &str) -> Page {
    let value = |name| form_value(form, name).unwrap_or_default();
    // The virtual proxy is the last path segment of proxyRestUri (".../qps/{prefix}/").
    let rest = value("proxyRestUri");
    let prefix = rest
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|p| *p != "qps")
        .unwrap_or_default();
    let group = value("group");
    let request = pb::RequestTicketRequest {
        virtual_proxy: prefix.to_owned(),
        user: Some(pb::User {
            user_directory: value("directory"),
            user_id: value("user"),
            attributes: (!group.is_empty())
                .then(|| pb::Attribute {
                    name: "group".into(),
                    value: group,
                })
                .into_iter()
                .collect(),
        }),
        target_id: Some(value("targetId")).filter(|id| !id.is_empty()),
    };
    let client =
        pb::authentication_service_client::AuthenticationServiceClient::connect(grpc.to_owned())
            .await;
    let answer = match client {
        Ok(mut client) => client.request_ticket(request).await,
        Err(error) => {
            return html(
                StatusCode::BAD_GATEWAY,
                format!("control plane unreachable: {}", escape(&error.to_string())),
            );
        }
    };
    match answer {
        Ok(answer) => {
            let answer = answer.into_inner();
            let target = answer.target_uri.unwrap_or_else(|| "/".to_owned());
            let separator = if target.contains('?') { '&' } else { '?' };
            let location = format!(
                "{target}{separator}qlikTicket={}",
                utf8_percent_encode(&answer.ticket, NON_ALPHANUMERIC)
            );
            let mut response = html(StatusCode::FOUND, String::new());
            if let Ok(location) = location.parse() {
                response.headers_mut().insert(LOCATION, location);
            }
            response
        }
        Err(status) => html(
            StatusCode::BAD_REQUEST,
            format!("login refused: {}", escape(status.message())),
        ),
    }
}

fn form_value(form: &str, name: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| {
            percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

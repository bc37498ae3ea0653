//! `gatehousectl`: one subcommand per public RPC of the control plane (Authentication, Session,
//! Personal; never the internal node API), over plain HTTP/2, TLS or mutual TLS, printing text
//! for people or JSON for programs. Exit codes: 0 success, 1 the call failed (its gRPC status
//! is printed), 64 bad usage.

mod cli;
mod connect;
mod render;

use std::process::ExitCode;

use clap::Parser;
use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::authentication_service_client::AuthenticationServiceClient;
use gatehouse_proto::v1::personal_service_client::PersonalServiceClient;
use gatehouse_proto::v1::session_service_client::SessionServiceClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

use cli::{Cli, Command, Output, PersonalArgs, SelectorArgs, UserArgs, UserSessionsArgs};

/// Exit code for bad usage (EX_USAGE).
const EXIT_USAGE: u8 = 64;
/// Exit code for a call the control plane (or the network) refused.
const EXIT_CALL_FAILED: u8 = 1;

/// A call's answer, in both renderings.
struct Answer {
    json: Value,
    text: String,
}

/// Why a command failed, and so which exit code it ends with.
enum Failure {
    Usage(String),
    Call {
        rpc: &'static str,
        status: tonic::Status,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    gatehouse_control_plane::process::install_crypto_provider();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let usage = error.use_stderr();
            // --help and --version print to stdout and succeed; anything else is bad usage.
            let _ = error.print();
            return if usage {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&cli).await {
        Ok(answer) => {
            match cli.output {
                Output::Human => print!("{}", answer.text),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&answer.json).unwrap_or_default()
                ),
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => {
            eprintln!("gatehousectl: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Call { rpc, status }) => {
            eprintln!(
                "gatehousectl: {rpc} failed: {}: {}",
                code_name(status.code()),
                describe(&status)
            );
            ExitCode::from(EXIT_CALL_FAILED)
        }
    }
}

async fn run(cli: &Cli) -> Result<Answer, Failure> {
    let channel =
        connect::channel(&cli.connection).map_err(|error| Failure::Usage(error.to_string()))?;
    match &cli.command {
        Command::RequestTicket {
            user,
            virtual_proxy,
            target_id,
        } => {
            let ticket = AuthenticationServiceClient::new(channel)
                .request_ticket(pb::RequestTicketRequest {
                    virtual_proxy: virtual_proxy.clone(),
                    user: Some(to_user(user)),
                    target_id: target_id.clone(),
                })
                .await
                .map_err(call("RequestTicket"))?
                .into_inner();
            Ok(Answer {
                json: render::ticket_json(&ticket),
                text: render::ticket_text(&ticket),
            })
        }
        Command::CreateSession {
            user,
            virtual_proxy,
            token,
        } => {
            let created = sessions(channel)
                .create_session(pb::CreateSessionRequest {
                    virtual_proxy: virtual_proxy.clone(),
                    user: Some(to_user(user)),
                    session_token: token.clone(),
                })
                .await
                .map_err(call("CreateSession"))?
                .into_inner();
            let mut text = render::fields(&[("session token", created.session_token.clone())]);
            text.push_str(&render::session_text(created.session.as_ref()));
            if !created.evicted.is_empty() {
                text.push_str("\nevicted to make room:\n");
                text.push_str(&render::sessions_text(&created.evicted));
            }
            Ok(Answer {
                json: json!({
                    "session_token": created.session_token,
                    "session": render::session_json(created.session.as_ref()),
                    "evicted": render::sessions_json(&created.evicted),
                }),
                text,
            })
        }
        Command::GetSession(selector) => {
            let found = sessions(channel)
                .get_session(pb::GetSessionRequest {
                    session: Some(to_selector(selector)),
                })
                .await
                .map_err(call("GetSession"))?
                .into_inner();
            Ok(one_session(found.session.as_ref()))
        }
        Command::DeleteSession(selector) => {
            let deleted = sessions(channel)
                .delete_session(pb::DeleteSessionRequest {
                    session: Some(to_selector(selector)),
                })
                .await
                .map_err(call("DeleteSession"))?
                .into_inner();
            let mut answer = one_session(deleted.session.as_ref());
            answer.text = format!("deleted:\n{}", answer.text);
            Ok(answer)
        }
        Command::ListSessions {
            virtual_proxy,
            page_size,
            page_token,
            single_page,
        } => {
            let mut client = sessions(channel);
            let one_page = *single_page || page_token.is_some();
            let mut token = page_token.clone().unwrap_or_default();
            let mut all = Vec::new();
            loop {
                let page = client
                    .list_sessions(pb::ListSessionsRequest {
                        virtual_proxy: virtual_proxy.clone(),
                        page_size: *page_size,
                        page_token: token,
                    })
                    .await
                    .map_err(call("ListSessions"))?
                    .into_inner();
                all.extend(page.sessions);
                token = page.next_page_token;
                if one_page || token.is_empty() {
                    break;
                }
            }
            let mut text = render::sessions_text(&all);
            if one_page && !token.is_empty() {
                text.push_str(&format!("next page: --page-token {token}\n"));
            }
            Ok(Answer {
                json: json!({
                    "sessions": render::sessions_json(&all),
                    "next_page_token": token,
                }),
                text,
            })
        }
        Command::ListUserSessions(args) => {
            let listed = sessions(channel)
                .list_user_sessions(pb::ListUserSessionsRequest {
                    user_directory: args.directory.clone(),
                    user_id: args.user.clone(),
                    virtual_proxy: args.virtual_proxy.clone(),
                })
                .await
                .map_err(call("ListUserSessions"))?
                .into_inner();
            Ok(session_list(&listed.sessions, None))
        }
        Command::DeleteUserSessions(UserSessionsArgs {
            directory,
            user,
            virtual_proxy,
        }) => {
            let deleted = sessions(channel)
                .delete_user_sessions(pb::DeleteUserSessionsRequest {
                    user_directory: directory.clone(),
                    user_id: user.clone(),
                    virtual_proxy: virtual_proxy.clone(),
                })
                .await
                .map_err(call("DeleteUserSessions"))?
                .into_inner();
            Ok(session_list(&deleted.sessions, Some("deleted")))
        }
        Command::Whoami(args) => {
            let request = personal_request(
                args,
                pb::GetCurrentUserRequest {
                    virtual_proxy: args.virtual_proxy.clone(),
                },
            )?;
            let current = PersonalServiceClient::new(channel)
                .get_current_user(request)
                .await
                .map_err(call("GetCurrentUser"))?
                .into_inner();
            Ok(one_session(current.session.as_ref()))
        }
        Command::Logout(args) => {
            let request = personal_request(
                args,
                pb::LogoutRequest {
                    virtual_proxy: args.virtual_proxy.clone(),
                },
            )?;
            let ended = PersonalServiceClient::new(channel)
                .logout(request)
                .await
                .map_err(call("Logout"))?
                .into_inner();
            let mut answer = one_session(ended.session.as_ref());
            answer.text = format!("logged out:\n{}", answer.text);
            Ok(answer)
        }
        Command::MySessions(args) => {
            let request = personal_request(
                args,
                pb::ListMySessionsRequest {
                    virtual_proxy: args.virtual_proxy.clone(),
                },
            )?;
            let own = PersonalServiceClient::new(channel)
                .list_my_sessions(request)
                .await
                .map_err(call("ListMySessions"))?
                .into_inner();
            Ok(Answer {
                json: render::own_sessions_json(&own),
                text: render::own_sessions_text(&own),
            })
        }
        Command::EndMySession { personal, handle } => {
            let request = personal_request(
                personal,
                pb::EndMySessionRequest {
                    virtual_proxy: personal.virtual_proxy.clone(),
                    handle: handle.clone(),
                },
            )?;
            let ended = PersonalServiceClient::new(channel)
                .end_my_session(request)
                .await
                .map_err(call("EndMySession"))?
                .into_inner();
            let mut answer = one_session(ended.session.as_ref());
            answer.text = format!("ended:\n{}", answer.text);
            Ok(answer)
        }
    }
}

fn sessions(channel: Channel) -> SessionServiceClient<Channel> {
    SessionServiceClient::new(channel)
}

fn call(rpc: &'static str) -> impl FnOnce(tonic::Status) -> Failure {
    move |status| Failure::Call { rpc, status }
}

fn one_session(session: Option<&pb::Session>) -> Answer {
    Answer {
        json: json!({ "session": render::session_json(session) }),
        text: render::session_text(session),
    }
}

fn session_list(sessions: &[pb::Session], heading: Option<&str>) -> Answer {
    let mut text = render::sessions_text(sessions);
    if let Some(heading) = heading {
        text = format!("{heading} {}:\n{text}", sessions.len());
    }
    Answer {
        json: json!({ "sessions": render::sessions_json(sessions) }),
        text,
    }
}

fn to_user(args: &UserArgs) -> pb::User {
    pb::User {
        user_directory: args.directory.clone(),
        user_id: args.user.clone(),
        attributes: args
            .attributes
            .iter()
            .map(|(name, value)| pb::Attribute {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

fn to_selector(args: &SelectorArgs) -> pb::SessionSelector {
    // clap's group makes exactly one of the two present.
    let by = match (&args.handle, &args.token) {
        (_, Some(token)) => pb::session_selector::By::SessionToken(token.clone()),
        (Some(handle), None) => pb::session_selector::By::Handle(handle.clone()),
        (None, None) => pb::session_selector::By::Handle(String::new()),
    };
    pb::SessionSelector { by: Some(by) }
}

/// A Personal API request, authorised by the caller's own session token.
fn personal_request<T>(args: &PersonalArgs, message: T) -> Result<tonic::Request<T>, Failure> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {}", args.token)
        .parse()
        .map_err(|_| Failure::Usage("--token holds characters a header cannot carry".into()))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// The status message, with the causes underneath it (a refused connection, a certificate
/// the CA did not sign) that tonic keeps out of the message.
fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The canonical name of a gRPC status code, as the gRPC specification spells it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

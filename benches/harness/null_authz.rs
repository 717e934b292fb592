//! A null ext_authz server for the load harness: answers every `Check` with OK and does no work.
//!
//! It is the baseline fedauthz is measured against (issue 7): the same tonic server stack,
//! generated from the same protos, on the same kind of runtime (`Runtime::new`, one worker per
//! core) as `fedauthz serve`, so the difference between the two is the cost of the check itself.
//! Bench-only (feature `bench-harness`); never shipped.
//!
//! ```sh
//! null-authz --listen 127.0.0.1:18052
//! ```

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use anyhow::Context as _;
use fedauthz::proto::auth::authorization_server::{Authorization, AuthorizationServer};
use fedauthz::proto::auth::{CheckRequest, CheckResponse, OkHttpResponse, check_response};
use fedauthz::proto::google::rpc::Status as RpcStatus;
use tonic::{Request, Response, Status};

struct NullAuthz;

#[tonic::async_trait]
impl Authorization for NullAuthz {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(RpcStatus {
                code: 0,
                ..RpcStatus::default()
            }),
            http_response: Some(check_response::HttpResponse::OkResponse(
                OkHttpResponse::default(),
            )),
            dynamic_metadata: None,
        }))
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = "127.0.0.1:18052".parse()?;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().context("--listen needs an address")?;
                listen = value.parse().context("--listen")?;
            }
            "-h" | "--help" => {
                println!("null-authz [--listen ADDR]  (default 127.0.0.1:18052)");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("bind {listen}"))?;
        eprintln!("null-authz listening on {}", listener.local_addr()?);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(NullAuthz))
            // TCP_NODELAY, as fedauthz sets it: the comparison is about the work, not Nagle.
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await
            .context("serve")
    })
}

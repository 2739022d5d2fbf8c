//! Bearer tokens over HTTP and gRPC with real clients (reqwest, the generated tonic clients):
//! issued for a password, accepted on every node that shares the secret, across a restart, and
//! refused when forged, altered, expired, revoked by a change to the user, or used to mint another.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use nanodb_protocol::pb::{self, auth_client::AuthClient, kv_client::KvClient};
use nanodb_server::config::{AuthConfig, Config};
use nanodb_server::server::Server;
use reqwest::StatusCode;
use tonic::Code;

use crate::harness::{any_port, b, config};

const USERS: &str = "\
user default off
user admin on >adminpw allkeys allchannels +@all
user alice on >alicepw ~app:* +@read +@write
";

const SECRET: &str = "0123456789abcdef0123456789abcdef-shared-by-both-nodes";

/// A server with HTTP, gRPC and RESP on, `USERS` in `dir`, and `auth`'s token settings.
async fn server(dir: &Path, auth: AuthConfig, persistence: bool) -> Server {
    let file = dir.join("users.acl");
    if !file.exists() {
        std::fs::write(&file, USERS).expect("users file");
    }
    let config = Config {
        http_addr: any_port(),
        grpc_addr: any_port(),
        resp_addr: any_port(),
        auth: AuthConfig { users_file: Some(file), ..auth },
        persistence,
        data_dir: dir.join("data"),
        ..config()
    };
    Server::start(config).await.expect("server starts")
}

fn shared_secret(dir: &Path) -> AuthConfig {
    let path = dir.join("token-secret");
    std::fs::write(&path, SECRET).expect("secret");
    AuthConfig { token_secret_file: Some(path), ..AuthConfig::default() }
}

fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

fn base(server: &Server) -> String {
    format!("http://{}", server.addrs().http.expect("http on"))
}

/// `POST /v1/auth/token` with `authorization`: the status and the JSON body.
async fn token_request(server: &Server, authorization: &str) -> (StatusCode, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/token", base(server)))
        .header("authorization", authorization)
        .send()
        .await
        .expect("token request");
    let status = r.status();
    (status, r.json().await.expect("json body"))
}

async fn token(server: &Server, user: &str, pass: &str) -> String {
    let (status, body) = token_request(server, &basic(user, pass)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"], user);
    assert!(body["expires_at_ms"].as_u64().is_some_and(|t| t > 0), "{body}");
    body["token"].as_str().expect("token").to_string()
}

/// `GET path` with `Authorization: Bearer token`: the status and the body as text.
async fn get_bearer(server: &Server, path: &str, token: &str) -> (StatusCode, String) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", base(server)))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("get");
    let status = r.status();
    (status, r.text().await.expect("body"))
}

async fn put_bearer(server: &Server, key: &str, token: &str) -> StatusCode {
    reqwest::Client::new()
        .put(format!("{}/v1/kv/{key}", base(server)))
        .header("authorization", format!("Bearer {token}"))
        .body("v")
        .send()
        .await
        .expect("put")
        .status()
}

async fn grpc_channel(server: &Server) -> tonic::transport::Channel {
    let url = format!("http://{}", server.addrs().grpc.expect("grpc on"));
    tonic::transport::Channel::from_shared(url).expect("uri").connect().await.expect("connect")
}

fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    r
}

#[tokio::test]
async fn a_token_from_one_node_works_on_another_sharing_the_secret_over_http_and_grpc() {
    let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = server(dir_a.path(), shared_secret(dir_a.path()), false).await;
    let b_node = server(dir_b.path(), shared_secret(dir_b.path()), false).await;

    let from_http = token(&a, "alice", "alicepw").await;
    assert_eq!(put_bearer(&b_node, "app:1", &from_http).await, StatusCode::CREATED, "HTTP on the other node");
    assert_eq!(get_bearer(&b_node, "/v1/kv/app:1", &from_http).await, (StatusCode::OK, "v".into()));
    assert_eq!(
        put_bearer(&b_node, "other", &from_http).await,
        StatusCode::FORBIDDEN,
        "the user's permissions"
    );

    // gRPC: Authenticate on B, use on A; the Auth service needs no credentials of its own.
    let ch_b = grpc_channel(&b_node).await;
    let issued = AuthClient::new(ch_b)
        .authenticate(pb::AuthenticateRequest { user: "alice".into(), password: "alicepw".into() })
        .await
        .expect("authenticate")
        .into_inner();
    assert_eq!(issued.user, "alice");
    let mut kv_a = KvClient::new(grpc_channel(&a).await);
    let put = pb::PutRequest { key: b("app:2"), value: b("g"), ..Default::default() };
    assert!(kv_a.put(bearer(put, &issued.token)).await.expect("put with a token").into_inner().applied);
    let got = kv_a.get(bearer(pb::GetRequest { key: b("app:2") }, &from_http)).await.expect("get");
    assert_eq!(got.into_inner().value, b("g"), "an HTTP-issued token on gRPC");
    let denied =
        kv_a.put(bearer(pb::PutRequest { key: b("x"), value: b("v"), ..Default::default() }, &issued.token));
    assert_eq!(denied.await.expect_err("outside ~app:*").code(), Code::PermissionDenied);

    let wrong = AuthClient::new(grpc_channel(&a).await)
        .authenticate(pb::AuthenticateRequest { user: "alice".into(), password: "nope".into() })
        .await
        .expect_err("wrong password");
    assert_eq!(wrong.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn forged_altered_expired_and_revoked_tokens_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let short = AuthConfig { token_ttl: Duration::from_millis(300), ..shared_secret(dir.path()) };
    let server = server(dir.path(), short, false).await;
    let good = token(&server, "alice", "alicepw").await;

    // Altered (the signature's first character, a truncation) or not a token at all: refused.
    // (auth/token.rs's unit test alters every position in turn.)
    let (head, tag) = good.rsplit_once('.').expect("tag");
    let altered = format!("{head}.{}{}", if tag.starts_with('A') { "B" } else { "A" }, &tag[1..]);
    for bad in [altered.as_str(), "ndb1.garbage.garbage", "not-a-token", &good[..good.len() - 2]] {
        let (status, body) = get_bearer(&server, "/v1/kv/app:1", bad).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}: {body}");
        assert!(body.contains("WRONGPASS"), "{body}");
        assert_eq!(put_bearer(&server, "app:forged", bad).await, StatusCode::UNAUTHORIZED);
    }
    // Forged: a token signed with another secret.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = server_with_own_secret(other_dir.path()).await;
    let foreign = token(&other, "admin", "adminpw").await;
    let (status, body) = get_bearer(&server, "/v1/kv/app:1", &foreign).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("signature"), "{body}");

    // A token cannot mint a token: the password is needed.
    let (status, body) = token_request(&server, &format!("Bearer {good}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Expired: refused once its lifetime is over (polled, bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get_bearer(&server, "/v1/kv/app:1", &good).await;
        if status == StatusCode::UNAUTHORIZED {
            assert!(body.contains("expired"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the token never expired: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Revoked: a change to the user ends its tokens at once, while another user's still work.
    let alice = token(&server, "alice", "alicepw").await;
    let admin = token(&server, "admin", "adminpw").await;
    assert_eq!(
        get_bearer(&server, "/v1/kv/app:1", &alice).await.0,
        StatusCode::NOT_FOUND,
        "valid: the key is absent"
    );
    let url = format!("redis://admin:adminpw@{}/", server.addrs().resp.expect("resp on"));
    let mut r =
        redis::Client::open(url).expect("client").get_multiplexed_async_connection().await.expect("connect");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("alice")
        .arg(">another")
        .query_async(&mut r)
        .await
        .expect("setuser");
    let (status, body) = get_bearer(&server, "/v1/kv/app:1", &alice).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("revoked"), "{body}");
    assert_eq!(
        get_bearer(&server, "/v1/kv/app:1", &admin).await.0,
        StatusCode::NOT_FOUND,
        "admin's token lives on"
    );

    // /metrics takes a bearer token (Prometheus' `authorization` setting); /healthz needs none.
    let (status, metrics) = get_bearer(&server, "/metrics", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.contains("nanodb_auth_failures_total"), "failures are counted");
    let health = reqwest::get(format!("{}/healthz", base(&server))).await.expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);

    // Nothing refused was written.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut r).await.expect("keys");
    assert!(keys.is_empty(), "{keys:?}");
}

async fn server_with_own_secret(dir: &Path) -> Server {
    server(dir, AuthConfig::default(), false).await
}

#[tokio::test]
async fn a_generated_secret_lives_in_the_data_dir_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = server(dir.path(), AuthConfig::default(), true).await;
    let issued = token(&first, "alice", "alicepw").await;
    assert_eq!(put_bearer(&first, "app:kept", &issued).await, StatusCode::CREATED);
    first.shutdown().await;

    let secret = dir.path().join("data").join("token-secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).expect("secret generated").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only the server's user may read it");
    }
    let second = server(dir.path(), AuthConfig::default(), true).await;
    assert_eq!(get_bearer(&second, "/v1/kv/app:kept", &issued).await, (StatusCode::OK, "v".into()));
}

#[tokio::test]
async fn with_auth_off_no_token_is_issued() {
    let server = Server::start(Config { http_addr: any_port(), grpc_addr: any_port(), ..config() })
        .await
        .expect("starts");
    let (status, body) = token_request(&server, &basic("default", "x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("authentication is off"), "{body}");
    let err = AuthClient::new(grpc_channel(&server).await)
        .authenticate(pb::AuthenticateRequest { user: String::new(), password: "x".into() })
        .await
        .expect_err("no users");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("authentication is off"), "{err:?}");
}

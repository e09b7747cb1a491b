//! The handshake over a real Unix socket: the right token is accepted, anything else refused.

use futures_util::SinkExt;
use ipc_proto::frame::{MsgCodec, DEFAULT_MAX_FRAME};
use ipc_proto::handshake::{Hello, HelloReply, WorkerKind, PROTOCOL_VERSION};
use ipc_proto::inference::{FromInference, ToInference};
use ipc_proto::transport::{self, Connection, HandshakeFailure};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;

fn sock_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ipc-proto-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("s.sock")
}

#[tokio::test]
async fn good_token_accepted_and_frames_flow() {
    let path = sock_path("good");
    let listener = transport::bind(&path).unwrap();
    let p2 = path.clone();
    let worker = tokio::spawn(async move {
        let mut c: Connection<ToInference, FromInference> =
            transport::worker_handshake(&p2, WorkerKind::Inference, "secret-1", DEFAULT_MAX_FRAME)
                .await
                .unwrap();
        transport::recv(&mut c).await.unwrap()
    });
    let (mut c, hello): (Connection<FromInference, ToInference>, _) = transport::accept_worker(
        &listener,
        WorkerKind::Inference,
        "secret-1",
        DEFAULT_MAX_FRAME,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(hello.pid, std::process::id());
    c.send(ToInference::Ping { seq: 42 }).await.unwrap();
    assert_eq!(worker.await.unwrap(), ToInference::Ping { seq: 42 });
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn bad_token_wrong_kind_and_old_version_are_refused() {
    let path = sock_path("bad");
    let listener = transport::bind(&path).unwrap();
    let p2 = path.clone();
    let intruders = tokio::spawn(async move {
        let mut reasons = Vec::new();
        let e = transport::worker_handshake::<ToInference, FromInference>(
            &p2,
            WorkerKind::Inference,
            "guess",
            1024,
        )
        .await
        .unwrap_err();
        reasons.push(e.to_string());
        let e = transport::worker_handshake::<ToInference, FromInference>(
            &p2,
            WorkerKind::Training,
            "secret-2",
            1024,
        )
        .await
        .unwrap_err();
        reasons.push(e.to_string());
        // An old peer speaking another protocol version.
        let s = transport::connect(&p2).await.unwrap();
        let mut c: Connection<HelloReply, Hello> = Framed::new(s, MsgCodec::new(1024));
        c.send(Hello {
            protocol_version: PROTOCOL_VERSION + 1,
            kind: WorkerKind::Inference,
            pid: 1,
            token: "secret-2".into(),
        })
        .await
        .unwrap();
        let HelloReply::Refused { reason } = transport::recv(&mut c).await.unwrap() else {
            panic!("accepted a wrong version")
        };
        reasons.push(reason);
        // A peer that sends garbage and hangs up.
        let mut s = transport::connect(&p2).await.unwrap();
        s.write_all(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1]).await.unwrap();
        drop(s);
        reasons
    });
    // Nobody presents the right token: the accept loop refuses each and finally times out.
    let res = transport::accept_worker::<FromInference, ToInference>(
        &listener,
        WorkerKind::Inference,
        "secret-2",
        1024,
        Duration::from_millis(1500),
    )
    .await;
    assert!(matches!(res, Err(HandshakeFailure::Timeout)), "{res:?}");
    let reasons = intruders.await.unwrap();
    assert!(reasons[0].contains("bad token"), "{reasons:?}");
    assert!(reasons[1].contains("kind"), "{reasons:?}");
    assert!(reasons[2].contains("protocol version"), "{reasons:?}");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn verify_rules() {
    let h = Hello {
        protocol_version: PROTOCOL_VERSION,
        kind: WorkerKind::Training,
        pid: 9,
        token: "abc".into(),
    };
    assert!(h.verify(WorkerKind::Training, "abc").is_ok());
    assert!(h.verify(WorkerKind::Training, "abcd").is_err());
    assert!(h.verify(WorkerKind::Training, "ab").is_err());
    assert!(h.verify(WorkerKind::Inference, "abc").is_err());
    let empty = Hello {
        token: String::new(),
        ..h
    };
    assert!(
        empty.verify(WorkerKind::Training, "").is_err(),
        "an empty token never passes"
    );
}

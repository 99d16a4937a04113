//! Hostile input over a real TLS WebSocket: malformed, oversized, unknown and premature
//! frames each get their stable error code, and the daemon keeps serving other clients.

use std::time::Duration;

use futures_util::SinkExt;
use prost::Message as _;
use relais_client::Client;
use relais_protocol::frame;
use relais_protocol::pb::{self, ErrorCode};
use relais_testkit::Daemon;
use relais_testkit::raw::{Session, Ws, code, next};
use tokio_tungstenite::tungstenite::Message;

const FRAME_LIMIT: usize = 64 * 1024;

/// Sends raw bytes and returns the error the server answers with, and its request id.
async fn error_for(ws: &mut Ws, bytes: Vec<u8>) -> (u64, pb::Error) {
    error_for_message(ws, Message::Binary(bytes.into())).await
}

async fn error_for_message(ws: &mut Ws, message: Message) -> (u64, pb::Error) {
    ws.send(message).await.expect("send");
    let envelope = next(ws).await.expect("an answer");
    match envelope.kind {
        Some(pb::envelope::Kind::Response(pb::Response {
            id,
            body: Some(pb::response::Body::Error(e)),
        })) => (id, e),
        Some(pb::envelope::Kind::Push(pb::Push {
            body: Some(pb::push::Body::Closing(e)),
        })) => (0, e),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_get_their_codes_and_others_keep_talking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(
        dir.path(),
        &format!("[limits]\nframe_bytes_max = {FRAME_LIMIT}\nmessage_bytes_max = {FRAME_LIMIT}\n"),
    );
    let alice_code = daemon.add_user("alice");
    let bob_code = daemon.add_user("bob");
    let alice = Client::enroll(
        &dir.path().join("alice"),
        &daemon.server,
        &daemon.ca,
        "alice",
        &alice_code,
    )
    .await
    .expect("alice enrolls");
    let bob = Client::enroll(
        &dir.path().join("bob"),
        &daemon.server,
        &daemon.ca,
        "bob",
        &bob_code,
    )
    .await
    .expect("bob enrolls");

    let Session { mut ws, .. } = Session::connect(&daemon).await;
    malformed_and_premature_frames_get_their_codes(&mut ws).await;
    an_oversized_frame_is_refused_with_the_connection(ws).await;
    // The daemon still serves everyone else.
    alice_and_bob_still_talk(&daemon, alice, bob).await;
}

/// Each frame a client would never send, on an unauthenticated connection, gets its code
/// and leaves the connection open.
async fn malformed_and_premature_frames_get_their_codes(ws: &mut Ws) {
    let (_, e) = error_for(ws, vec![0xff, 0xff, 0xff, 0xff]).await;
    assert_eq!(code(&e), ErrorCode::MalformedFrame, "{e:?}");

    let wrong_version = pb::Envelope {
        version: 2,
        kind: Some(pb::envelope::Kind::Request(pb::Request {
            id: 1,
            body: None,
        })),
    };
    let (_, e) = error_for(ws, wrong_version.encode_to_vec()).await;
    assert_eq!(code(&e), ErrorCode::UnsupportedVersion, "{e:?}");

    // A request whose body is a field number this server does not know (99).
    let unknown = vec![0x08, 0x01, 0x12, 0x05, 0x08, 0x07, 0x9a, 0x06, 0x00];
    let (id, e) = error_for(ws, unknown).await;
    assert_eq!((id, code(&e)), (7, ErrorCode::UnknownMessageType), "{e:?}");

    let premature = frame::request(
        8,
        pb::request::Body::KeyPackageStatus(pb::KeyPackageStatus {}),
    );
    let (id, e) = error_for(ws, premature).await;
    assert_eq!((id, code(&e)), (8, ErrorCode::NotAuthenticated), "{e:?}");

    let forged = frame::request(
        9,
        pb::request::Body::Authenticate(pb::Authenticate {
            public_key: vec![1; 32],
            signature: vec![2; 64],
        }),
    );
    let (id, e) = error_for(ws, forged).await;
    assert_eq!(
        (id, code(&e)),
        (9, ErrorCode::AuthenticationFailed),
        "{e:?}"
    );

    let (_, e) = error_for_message(ws, Message::Text("hello".into())).await;
    assert_eq!(code(&e), ErrorCode::MalformedFrame, "{e:?}");
}

/// Unauthenticated, the connection may send 8 KiB in all: the relay closes it with
/// FRAME_TOO_LARGE as soon as the frame passes that, often before the client has written
/// the rest, which then meets a reset connection. Either is the refusal.
async fn an_oversized_frame_is_refused_with_the_connection(mut ws: Ws) {
    let oversized = vec![0u8; FRAME_LIMIT + 1];
    let sent = ws.send(Message::Binary(oversized.into())).await;
    if let Err(e) = &sent {
        assert!(
            matches!(e, tokio_tungstenite::tungstenite::Error::Io(io)
                if matches!(io.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe)),
            "sending the oversized frame: {e}"
        );
    }
    // Whatever arrived before the close is the refusal; `next` times out, failing the
    // test, if the connection stays open.
    let mut refusals = Vec::new();
    while let Some(envelope) = next(&mut ws).await {
        match envelope.kind {
            Some(pb::envelope::Kind::Response(pb::Response {
                body: Some(pb::response::Body::Error(e)),
                ..
            }))
            | Some(pb::envelope::Kind::Push(pb::Push {
                body: Some(pb::push::Body::Closing(e)),
            })) => refusals.push(code(&e)),
            other => panic!("expected FRAME_TOO_LARGE, got {other:?}"),
        }
    }
    assert!(
        refusals.iter().all(|c| *c == ErrorCode::FrameTooLarge),
        "{refusals:?}"
    );
    assert!(
        sent.is_err() || !refusals.is_empty(),
        "a frame sent whole is answered with FRAME_TOO_LARGE before the close"
    );
}

/// Alice and Bob, enrolled before the hostile frames, connect and exchange a message.
async fn alice_and_bob_still_talk(daemon: &Daemon, mut alice: Client, mut bob: Client) {
    alice.connect().await.expect("alice connects");
    bob.connect().await.expect("bob connects");
    let text = relais_testkit::secret("after-hostile-frames");
    alice.send("bob", &text).await.expect("alice sends");
    let received = bob
        .receive(Duration::from_secs(10))
        .await
        .expect("bob receives");
    assert_eq!(
        received.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        [text.as_str()]
    );
    daemon.assert_never_stored(&[text]);
}

/// A device may send many requests without waiting: submissions and acknowledgements are
/// queued to the writer in arrival order, and every answer comes back in request order,
/// also around a request that is not pipelined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_request_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let enrollment_code = daemon.add_user("carol");
    let mut session = Session::connect(&daemon).await;
    session.send_enroll(1, "carol", &enrollment_code, 7).await;
    let mut ws = session.ws;

    // 150 requests in one go (more than one connection may have in flight): acknowledgements
    // of nothing, some of them quiet (not answered), a KeyPackage status query in the
    // middle, and submissions that are not MLS messages, which are refused one by one.
    let mut expected = Vec::new();
    for id in 2..152u64 {
        let quiet = id % 5 == 0;
        let body = match id {
            76 => pb::request::Body::KeyPackageStatus(pb::KeyPackageStatus {}),
            id if id % 3 == 0 => pb::request::Body::SubmitMessage(pb::SubmitMessage {
                message_id: id.to_be_bytes().to_vec(),
                mls_message: b"not an MLS message".to_vec(),
            }),
            id => pb::request::Body::Acknowledge(pb::Acknowledge {
                sequences: vec![id, id + 1000],
                quiet,
            }),
        };
        if !(quiet && id % 3 != 0 && id != 76) {
            expected.push(id);
        }
        ws.feed(Message::Binary(frame::request(id, body).into()))
            .await
            .expect("queue request");
    }
    ws.flush().await.expect("send requests");

    let mut answered = Vec::new();
    while answered.len() < expected.len() + 1 {
        let envelope = next(&mut ws).await.expect("an answer");
        let Some(pb::envelope::Kind::Response(response)) = envelope.kind else {
            continue; // pushes (none are expected here) may interleave
        };
        match (response.id, response.body.expect("a body")) {
            (1, pb::response::Body::Enrolled(_)) => {}
            (id, pb::response::Body::Acknowledged(a)) => {
                assert_eq!(a.removed, 0, "nothing was queued for {id}");
            }
            (id, pb::response::Body::Error(e)) => {
                assert_eq!(id % 3, 0, "only the submissions fail: {id} {e:?}");
                assert_eq!(code(&e), ErrorCode::InvalidMessage, "{e:?}");
            }
            (76, pb::response::Body::KeyPackageStatus(_)) => {}
            other => panic!("unexpected answer {other:?}"),
        }
        answered.push(response.id);
    }
    assert_eq!(answered[0], 1, "enrollment is answered first");
    assert_eq!(answered[1..], expected[..], "answers in request order");

    // A quiet acknowledgement that fails is answered by the end of the connection, so
    // that no later answer can be taken to confirm it.
    let too_many = pb::request::Body::Acknowledge(pb::Acknowledge {
        sequences: (0..5000).collect(),
        quiet: true,
    });
    let after = pb::request::Body::KeyPackageStatus(pb::KeyPackageStatus {});
    ws.feed(Message::Binary(frame::request(200, too_many).into()))
        .await
        .expect("queue request");
    ws.feed(Message::Binary(frame::request(201, after).into()))
        .await
        .expect("queue request");
    ws.flush().await.expect("send requests");
    let mut closing = None;
    while let Some(envelope) = next(&mut ws).await {
        match envelope.kind {
            Some(pb::envelope::Kind::Push(pb::Push {
                body: Some(pb::push::Body::Closing(e)),
            })) => closing = Some(e),
            Some(pb::envelope::Kind::Response(r)) => panic!("answered after a failure: {r:?}"),
            _ => {}
        }
    }
    let closing = closing.expect("a closing push");
    assert_eq!(code(&closing), ErrorCode::LimitExceeded, "{closing:?}");
}

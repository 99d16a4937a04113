//! The connection's decisions, state by state, with a clock the test moves.

use std::time::{Duration, Instant};

use relais_protocol::frame;
use relais_protocol::pb::{self, request::Body as Req};

use super::*;

const LIMITS: Limits = Limits {
    frame_bytes_max: 1024,
    authentication_time: Duration::from_secs(10),
    messages_per_second: 2,
    messages_burst: 3,
};

fn request(kind: RequestKind) -> Option<Req> {
    Some(match kind {
        RequestKind::Enroll => Req::Enroll(pb::Enroll::default()),
        RequestKind::Authenticate => Req::Authenticate(pb::Authenticate::default()),
        RequestKind::PublishKeyPackages => {
            Req::PublishKeyPackages(pb::PublishKeyPackages::default())
        }
        RequestKind::ClaimKeyPackages => Req::ClaimKeyPackages(pb::ClaimKeyPackages::default()),
        RequestKind::CreateGroup => Req::CreateGroup(pb::CreateGroup::default()),
        RequestKind::SubmitCommit => Req::SubmitCommit(pb::SubmitCommit::default()),
        RequestKind::SubmitMessage => Req::SubmitMessage(pb::SubmitMessage::default()),
        RequestKind::Acknowledge => Req::Acknowledge(pb::Acknowledge::default()),
        RequestKind::KeyPackageStatus => Req::KeyPackageStatus(pb::KeyPackageStatus::default()),
        RequestKind::ListDevices => Req::ListDevices(pb::ListDevices::default()),
        RequestKind::RevokeDevice => Req::RevokeDevice(pb::RevokeDevice::default()),
        RequestKind::IssueDeviceCode => Req::IssueDeviceCode(pb::IssueDeviceCode::default()),
        RequestKind::Unknown => return None,
    })
}

/// The bytes of a request frame of `kind` with id 7.
fn frame_of(kind: RequestKind) -> Vec<u8> {
    match request(kind) {
        Some(body) => frame::request(7, body),
        None => frame::encode_envelope(pb::envelope::Kind::Request(pb::Request {
            id: 7,
            body: None,
        })),
    }
}

fn route_of(incoming: Incoming) -> Route {
    match incoming {
        Incoming::Request { route, .. } => route,
        other => panic!("not a request: {other:?}"),
    }
}

const ALL: [RequestKind; 13] = [
    RequestKind::Enroll,
    RequestKind::Authenticate,
    RequestKind::PublishKeyPackages,
    RequestKind::ClaimKeyPackages,
    RequestKind::CreateGroup,
    RequestKind::SubmitCommit,
    RequestKind::SubmitMessage,
    RequestKind::Acknowledge,
    RequestKind::KeyPackageStatus,
    RequestKind::ListDevices,
    RequestKind::RevokeDevice,
    RequestKind::IssueDeviceCode,
    RequestKind::Unknown,
];

#[test]
fn the_routing_table() {
    use RequestKind::*;
    for kind in ALL {
        let before = match kind {
            Enroll | Authenticate => Route::Serial,
            Unknown => Route::Refused(Refusal::UnknownRequest),
            _ => Route::Refused(Refusal::NotAuthenticated),
        };
        let after = match kind {
            Enroll | Authenticate => Route::Refused(Refusal::AlreadyAuthenticated),
            Unknown => Route::Refused(Refusal::UnknownRequest),
            SubmitMessage | Acknowledge => Route::Pipelined,
            _ => Route::Serial,
        };
        assert_eq!(route(false, kind), before, "{kind:?} before authentication");
        assert_eq!(route(true, kind), after, "{kind:?} after authentication");
        assert_eq!(RequestKind::of(request(kind).as_ref()), kind);
    }
}

#[test]
fn frames_are_routed_by_the_session_state() {
    let t0 = Instant::now();
    let mut session = Session::new(LIMITS, t0);
    for kind in ALL {
        assert_eq!(
            route_of(session.on_frame(&frame_of(kind), t0)),
            route(false, kind),
            "{kind:?}"
        );
    }
    session.authenticated();
    let t1 = t0 + Duration::from_secs(100);
    for kind in ALL {
        assert_eq!(
            route_of(session.on_frame(&frame_of(kind), t1)),
            route(true, kind),
            "{kind:?}"
        );
    }
    let quiet = frame::request(
        9,
        Req::Acknowledge(pb::Acknowledge {
            quiet: true,
            ..Default::default()
        }),
    );
    assert!(matches!(
        session.on_frame(&quiet, t1),
        Incoming::Request {
            id: 9,
            quiet: true,
            route: Route::Pipelined,
            ..
        }
    ));
}

#[test]
fn bad_frames_get_their_code_and_an_oversized_one_closes() {
    let t0 = Instant::now();
    let mut session = Session::new(LIMITS, t0);
    let cases: [(&str, Vec<u8>, Incoming); 4] = [
        (
            "oversized",
            vec![0; LIMITS.frame_bytes_max + 1],
            Incoming::Close(Refusal::FrameTooLarge(
                "frame of 1025 bytes exceeds the limit of 1024".into(),
            )),
        ),
        (
            "a push, not a request",
            frame::push(pb::push::Body::Challenge(pb::Challenge::default())),
            Incoming::Error(Refusal::NotARequest),
        ),
        (
            "an empty frame, version 0",
            Vec::new(),
            Incoming::Error(Refusal::UnsupportedVersion(String::new())),
        ),
        (
            "junk",
            vec![0xff; 16],
            Incoming::Error(Refusal::MalformedFrame(String::new())),
        ),
    ];
    for (name, bytes, expected) in cases {
        let got = session.on_frame(&bytes, t0);
        let same_kind = match (&got, &expected) {
            (Incoming::Close(a), Incoming::Close(b)) | (Incoming::Error(a), Incoming::Error(b)) => {
                a.code() == b.code()
            }
            _ => false,
        };
        assert!(same_kind, "{name}: {got:?}");
    }
}

#[test]
fn the_authentication_deadline_counts_from_the_accept() {
    let t0 = Instant::now();
    let mut session = Session::new(LIMITS, t0);
    assert_eq!(session.deadline(), Some(t0 + LIMITS.authentication_time));
    assert_eq!(session.expired(t0 + Duration::from_secs(9)), None);
    assert_eq!(
        session.expired(t0 + LIMITS.authentication_time),
        Some(Refusal::AuthenticationDeadline)
    );
    session.authenticated();
    assert_eq!(session.deadline(), None);
    assert_eq!(session.expired(t0 + Duration::from_secs(3600)), None);
}

#[test]
fn submissions_are_limited_to_the_rate_and_burst() {
    let t0 = Instant::now();
    let mut session = Session::new(LIMITS, t0);
    session.authenticated();
    let submit = |session: &mut Session, kind, at| route_of(session.on_frame(&frame_of(kind), at));
    for _ in 0..LIMITS.messages_burst {
        assert_eq!(
            submit(&mut session, RequestKind::SubmitMessage, t0),
            Route::Pipelined
        );
    }
    assert!(matches!(
        submit(&mut session, RequestKind::SubmitCommit, t0),
        Route::Refused(Refusal::RateLimited(_))
    ));
    assert_eq!(
        submit(&mut session, RequestKind::Acknowledge, t0),
        Route::Pipelined,
        "acknowledgements are not submissions"
    );
    let half = t0 + Duration::from_millis(500);
    assert_eq!(
        submit(&mut session, RequestKind::SubmitCommit, half),
        Route::Serial,
        "a token comes back at the rate"
    );
    assert!(matches!(
        submit(&mut session, RequestKind::SubmitMessage, half),
        Route::Refused(Refusal::RateLimited(_))
    ));
    let later = t0 + Duration::from_secs(60);
    for _ in 0..LIMITS.messages_burst {
        assert_eq!(
            submit(&mut session, RequestKind::SubmitMessage, later),
            Route::Pipelined
        );
    }
    assert!(
        matches!(
            submit(&mut session, RequestKind::SubmitMessage, later),
            Route::Refused(Refusal::RateLimited(_))
        ),
        "never more than the burst"
    );
}

#[test]
fn too_many_protocol_errors_close_the_connection() {
    let t0 = Instant::now();
    let mut session = Session::new(LIMITS, t0);
    for _ in 0..PROTOCOL_ERRORS_MAX {
        session.on_text();
        assert_eq!(session.too_many_errors(), None);
    }
    assert!(session.answered_error(relais_protocol::pb::ErrorCode::NotAuthenticated as i32));
    assert_eq!(
        session.too_many_errors(),
        Some(Refusal::TooManyProtocolErrors)
    );
    let mut calm = Session::new(LIMITS, t0);
    for _ in 0..(2 * PROTOCOL_ERRORS_MAX) {
        assert!(!calm.answered_error(relais_protocol::pb::ErrorCode::EpochConflict as i32));
    }
    assert_eq!(calm.too_many_errors(), None, "refusals are normal traffic");
}

#[test]
fn deliveries_catch_up_then_go_live_and_never_repeat() {
    let mut session = Session::new(LIMITS, Instant::now());
    assert_eq!(session.stream(), Stream::Closed);
    session.woken();
    assert_eq!(
        session.stream(),
        Stream::Closed,
        "nothing to deliver before authentication"
    );
    session.authenticated();
    assert_eq!(session.stream(), Stream::CatchingUp);
    for seq in [3, 5] {
        session.sent_stored(seq);
    }
    session.page_sent(false, false);
    assert_eq!(session.stream(), Stream::CatchingUp, "a full page: read on");
    session.page_sent(true, true);
    assert_eq!(
        session.stream(),
        Stream::CatchingUp,
        "a newer push arrived: read again"
    );
    session.page_sent(true, false);
    assert_eq!(session.stream(), Stream::Live);
    assert!(!session.push(5), "sent from storage already");
    assert!(session.push(6));
    assert!(!session.push(6));
    assert_eq!(session.cursor(), 6);
    session.woken();
    assert_eq!(
        session.stream(),
        Stream::CatchingUp,
        "woken: read storage after the cursor"
    );
}

#[test]
fn accounts_are_read_again_at_their_expiry_or_within_the_hour() {
    let now = 1_000_000;
    let cases = [
        (None, None),
        (Some(now + 2_000), Some(Duration::from_secs(2))),
        (Some(now - 5_000), Some(Duration::ZERO)),
        (Some(now + 86_400_000), Some(ACCOUNT_RECHECK_MAX)),
    ];
    for (expires_at_ms, expected) in cases {
        assert_eq!(
            account_recheck(expires_at_ms, now),
            expected,
            "{expires_at_ms:?}"
        );
    }
}

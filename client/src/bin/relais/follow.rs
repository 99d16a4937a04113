//! `relais follow`: a session's events printed as they come, until SIGINT or SIGTERM.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use relais_client::{
    ConnectionState, ConversationChange, DeliveryState, Event, ReceivedMessage, Session,
};
use relais_protocol::exit::{EX_SOFTWARE, FAILURE};

use crate::passphrase;
use crate::{exit_code, render};

/// `relais follow`: prints a session's events until SIGINT or SIGTERM, then shuts it down
/// cleanly (exit 0). A session that ends by itself (a revoked device) exits as its error
/// says; a second signal during the shutdown exits at once.
pub async fn follow(home: &Path, json: bool, unlock: &passphrase::Unlock) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let opened = passphrase::unlock(home, unlock, async |secret| {
        Session::open_with(home, secret).await
    });
    let mut session = match opened.await {
        Ok(session) => session,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit_code(&e));
        }
    };
    // Handled only once the session runs, so that Ctrl-C at a passphrase prompt still stops
    // the program at once.
    let signals =
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
    let (mut interrupt, mut terminate) = match signals {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("error: cannot handle signals: {e}");
            let _ = session.shutdown().await;
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    let mut output = Ok(());
    loop {
        let event = tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            event = session.next_event() => event,
        };
        let Some(event) = event else { break };
        output = show_event(&event, json);
        if output.is_err() {
            break;
        }
    }
    let ended = tokio::select! {
        ended = session.shutdown() => ended,
        _ = interrupt.recv() => return ExitCode::from(FAILURE),
        _ = terminate.recv() => return ExitCode::from(FAILURE),
    };
    match (output, ended) {
        (Err(e), _) => {
            eprintln!("error: cannot write to standard output: {e}");
            ExitCode::from(FAILURE)
        }
        (Ok(()), Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code(&e))
        }
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
    }
}

/// Prints one event as `follow` shows it, flushed at once.
fn show_event(event: &Event, json: bool) -> std::io::Result<()> {
    let line = if json {
        let mut line = serde_json::to_string(event).map_err(std::io::Error::other)?;
        line.push('\n');
        line
    } else {
        match event {
            Event::Message {
                conversation,
                sender,
                sent_at_ms,
                text,
                ..
            } => render(
                &[ReceivedMessage {
                    conversation: conversation.clone(),
                    sender: sender.clone(),
                    sent_at_ms: *sent_at_ms,
                    text: text.clone(),
                    event: false,
                }],
                false,
            ),
            Event::Notice {
                conversation,
                at_ms,
                text,
                ..
            } => render(
                &[ReceivedMessage {
                    conversation: conversation.clone(),
                    sender: String::new(),
                    sent_at_ms: *at_ms,
                    text: text.clone(),
                    event: true,
                }],
                false,
            ),
            other => {
                if let Some(note) = describe_event(other) {
                    eprintln!("{note}");
                }
                return Ok(());
            }
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes())?;
    stdout.flush()
}

/// What `follow` says on standard error about an event other than a message or a notice;
/// `None` for those whose notice already says it (membership) or that need no word.
fn describe_event(event: &Event) -> Option<String> {
    Some(match event {
        Event::Connection {
            state,
            reason,
            retry_in_ms,
            ..
        } => describe_connection(*state, reason.as_deref(), *retry_in_ms)?,
        Event::Warning { text } => format!("warning: {text}"),
        Event::Lagged { missed } => {
            format!("warning: {missed} events were not shown; `relais history` has the messages")
        }
        Event::Delivery {
            state: DeliveryState::Failed,
            conversation,
            reason,
            ..
        } => format!(
            "warning: a message to {conversation} was not delivered: {}",
            reason.as_deref().unwrap_or("refused")
        ),
        Event::Delivery {
            state: DeliveryState::Pending,
            conversation,
            ..
        } => format!(
            "relais: a message to {conversation} awaits the relay's answer; it is sent again \
             once reconnected"
        ),
        Event::Conversation {
            conversation,
            change,
            previous_name,
            ..
        } => match change {
            ConversationChange::Created => format!("relais: new conversation {conversation}"),
            ConversationChange::Renamed => format!(
                "relais: {} is now called {conversation}",
                previous_name.as_deref().unwrap_or("a conversation")
            ),
            ConversationChange::Left => format!("relais: you are no longer in {conversation}"),
        },
        Event::Verification {
            contact,
            verified: true,
        } => format!("relais: {contact} is verified"),
        Event::Verification {
            contact,
            verified: false,
        } => format!(
            "warning: {contact} is no longer verified: compare safety numbers again \
             (`relais verify {contact}`)"
        ),
        Event::Membership { .. }
        | Event::Delivery {
            state: DeliveryState::Sent,
            ..
        }
        | Event::Message { .. }
        | Event::Notice { .. } => return None,
    })
}

/// What `follow` says about its connection; nothing at the end, whose error, if any, is
/// printed once the session is shut down.
fn describe_connection(
    state: ConnectionState,
    reason: Option<&str>,
    retry_in_ms: Option<u64>,
) -> Option<String> {
    Some(match state {
        ConnectionState::Connected => "relais: connected".into(),
        ConnectionState::Disconnected => format!(
            "relais: disconnected: {}",
            reason.unwrap_or("no reason given")
        ),
        ConnectionState::Reconnecting => {
            let seconds = retry_in_ms.unwrap_or(0) as f64 / 1000.0;
            let why = reason.map_or_else(String::new, |r| format!(" ({r})"));
            format!("relais: reconnecting in {seconds:.1} s{why}")
        }
        ConnectionState::Ended => return None,
    })
}

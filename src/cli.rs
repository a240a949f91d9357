//! Commands of the `roomcast` binary besides running the server: `roomcast members
//! grant|revoke` manage project memberships directly in the configured database — the
//! way to appoint a project's first admin, before anyone can do it through the API.
//! Changes are audited like the API's, with the actor `cli` (kind `service`). Also the
//! signals the project's long-running binaries stop on ([`stop_signal`]).

use crate::store::{Mutation, Store, StoreError};
use crate::tracker::{Actor, Role};

/// Gives `user` the role `role` in `project`; returns a line describing what happened.
pub async fn grant(
    database_url: &str,
    project: i64,
    user: &str,
    role: Role,
) -> Result<String, StoreError> {
    let store = Store::connect(database_url).await?;
    let change = store
        .put_membership(&mutation(), project, user, role)
        .await?;
    Ok(match change.previous {
        None => format!("{user} is now {} of project {project}", role.as_str()),
        Some(previous) if previous == role => {
            format!("{user} already was {} of project {project}", role.as_str())
        }
        Some(previous) => format!(
            "{user} is now {} of project {project} (was {})",
            role.as_str(),
            previous.as_str()
        ),
    })
}

/// Removes `user` from `project`; returns a line describing what happened.
pub async fn revoke(database_url: &str, project: i64, user: &str) -> Result<String, StoreError> {
    let store = Store::connect(database_url).await?;
    let removed = store.delete_membership(&mutation(), project, user).await?;
    Ok(format!(
        "{user} is no longer {} of project {project}",
        removed.role.as_str()
    ))
}

fn mutation() -> Mutation {
    Mutation {
        actor: Actor {
            name: "cli".into(),
            kind: "service",
        },
        request_id: format!("cli-{}", uuid::Uuid::new_v4()),
        idempotency: None,
        admin: true,
    }
}

/// A signal asking a process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (a service manager, `kill`, `timeout`).
    Terminate,
}

impl StopSignal {
    /// The signal's name: `SIGINT` or `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// The status a shell reports for a process this signal ended: 128 + its number.
    pub fn exit_status(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }
}

/// Resolves on the next SIGINT or SIGTERM, saying which. The handlers are installed
/// when this is called, not when the future is first polled: a signal that arrives in
/// between (say, right after a caller printed that it is ready) is not missed.
pub fn stop_signal() -> impl std::future::Future<Output = StopSignal> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
        let mut terminate = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
        async move {
            tokio::select! {
                _ = interrupt.recv() => StopSignal::Interrupt,
                _ = terminate.recv() => StopSignal::Terminate,
            }
        }
    }
    #[cfg(not(unix))]
    {
        let interrupt = tokio::signal::ctrl_c();
        async move {
            let _ = interrupt.await;
            StopSignal::Interrupt
        }
    }
}

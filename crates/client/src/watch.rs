//! Watching a task across master failures.

use std::time::Duration;

use futures::Stream;
use futures::StreamExt;
use taurus_protocol::convert::task_state_from_i32;
use taurus_protocol::v1;

use crate::client::Client;
use crate::error::ClientError;
use crate::retry::is_retryable;
use crate::retry::jittered_backoff;

/// Reconnections in a row without receiving anything before the watch gives up.
const MAX_EMPTY_RECONNECTS: u32 = 20;

struct Watch {
    client: Client,
    id: String,
    /// Log index of the last change handed out.
    last_index: Option<u64>,
    /// Open stream and the index of the master serving it.
    stream: Option<(tonic::Streaming<v1::WatchTaskEvent>, usize)>,
    /// Breaks since the last received event.
    breaks: u32,
    done: bool,
}

/// Whether the task is in a terminal state (an unknown state counts as not terminal).
pub(crate) fn is_terminal(task: &v1::Task) -> bool {
    task_state_from_i32(task.state, "state")
        .map(|s| s.is_terminal())
        .unwrap_or(false)
}

impl Watch {
    async fn next_item(&mut self) -> Option<Result<v1::Task, ClientError>> {
        loop {
            if self.done {
                return None;
            }
            let (stream, idx) = match self.stream.as_mut() {
                Some((s, idx)) => (s, *idx),
                None => match self.client.open_watch(&self.id).await {
                    Ok(opened) => {
                        let (s, idx) = self.stream.insert(opened);
                        (s, *idx)
                    }
                    Err(e) => return self.fail(e),
                },
            };
            match stream.message().await {
                Ok(Some(event)) => {
                    self.breaks = 0;
                    let Some(task) = event.task else {
                        return self.fail(ClientError::invalid_response(
                            "watch task",
                            "event without a task",
                        ));
                    };
                    if self.last_index.is_some_and(|last| task.log_index <= last) {
                        continue; // already seen (the first event after a reconnect)
                    }
                    self.last_index = Some(task.log_index);
                    if is_terminal(&task) {
                        self.done = true;
                    }
                    return Some(Ok(task));
                }
                Ok(None) => {
                    tracing::debug!(id = %self.id, "watch stream ended before a terminal state; resuming");
                }
                Err(status) if is_retryable(&status) => {
                    tracing::debug!(id = %self.id, %status, "watch stream broke; resuming on another master");
                }
                Err(status) => {
                    let master = self.client.masters()[idx].to_string();
                    return self.fail(ClientError::Rejected {
                        op: "watch task",
                        master,
                        code: status.code(),
                        message: status.message().to_string(),
                    });
                }
            }
            self.stream = None;
            self.client.rotate(idx);
            self.breaks += 1;
            if self.breaks > MAX_EMPTY_RECONNECTS {
                return self.fail(ClientError::invalid_response(
                    "watch task",
                    format!("the stream broke {MAX_EMPTY_RECONNECTS} times in a row without an event"),
                ));
            }
            tokio::time::sleep(jittered_backoff(self.breaks - 1).min(Duration::from_secs(1))).await;
        }
    }

    fn fail(&mut self, e: ClientError) -> Option<Result<v1::Task, ClientError>> {
        self.done = true;
        Some(Err(e))
    }
}

impl Client {
    /// Streams the task's current state and then every change, ending after a terminal state.
    /// When a stream breaks before that, the watch resumes on another master; changes already
    /// delivered (by log index) are not delivered again. An error ends the stream.
    pub fn watch_task(&self, id: &str) -> impl Stream<Item = Result<v1::Task, ClientError>> + Send + 'static {
        let watch = Watch {
            client: self.clone(),
            id: id.to_string(),
            last_index: None,
            stream: None,
            breaks: 0,
            done: false,
        };
        futures::stream::unfold(
            watch,
            |mut w| async move { w.next_item().await.map(|item| (item, w)) },
        )
    }

    /// Waits until the task reaches a terminal state and returns it.
    pub async fn wait_task(&self, id: &str) -> Result<v1::Task, ClientError> {
        let mut stream = std::pin::pin!(self.watch_task(id));
        while let Some(item) = stream.next().await {
            let task = item?;
            if is_terminal(&task) {
                return Ok(task);
            }
        }
        Err(ClientError::invalid_response(
            "watch task",
            "the watch ended before a terminal state",
        ))
    }
}

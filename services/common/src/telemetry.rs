//! Logging set-up shared by every binary.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber writing to stderr. `filter` uses the
/// EnvFilter syntax ("info", "agenda_db=debug,raft=warn"); a bad filter
/// falls back to "info" with a warning rather than failing start-up.
pub fn init(filter: &str) {
    let (filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, never in log files.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .try_init();
    if let Some(e) = bad {
        tracing::warn!(error = %e, "bad log filter; using \"info\"");
    }
}

tokio::task_local! {
    /// The id of the public request a task works for (the gateway's
    /// `x-request-id`), carried to agenda-db so one id finds a request's
    /// whole path in the logs of every process.
    static REQUEST_ID: String;
}

/// The gRPC metadata key carrying [`current_request_id`] between processes.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Runs `fut` as work for request `id`: calls it makes to agenda-db carry
/// the id (see [`PassRequestId`]).
pub async fn with_request_id<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// The request id of the running task, if it works for one.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

/// Adds the running task's request id to outgoing gRPC calls. Tonic runs
/// an interceptor inside the caller's poll, so the task-local is there.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassRequestId;

impl tonic::service::Interceptor for PassRequestId {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(id) = REQUEST_ID
            .try_with(|id| tonic::metadata::MetadataValue::try_from(id.as_str()).ok())
            .ok()
            .flatten()
        {
            req.metadata_mut().insert(REQUEST_ID_HEADER, id);
        }
        Ok(req)
    }
}

/// The request id a gRPC call carries (empty when none, or not text).
pub fn request_id_of<T>(req: &tonic::Request<T>) -> String {
    req.metadata()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(128).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[tokio::test]
    async fn the_request_id_rides_on_calls_made_in_its_scope() {
        let mut i = PassRequestId;
        let outside = i.call(tonic::Request::new(())).unwrap();
        assert_eq!(request_id_of(&outside), "");
        let inside = with_request_id("abc-1".into(), async {
            assert_eq!(current_request_id().as_deref(), Some("abc-1"));
            PassRequestId.call(tonic::Request::new(())).unwrap()
        })
        .await;
        assert_eq!(request_id_of(&inside), "abc-1");
        assert_eq!(current_request_id(), None);
    }
}

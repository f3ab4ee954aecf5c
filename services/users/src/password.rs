//! Password hashing (argon2id, PHC strings). Hashing is deliberately slow
//! (and takes 19 MiB each), so it runs within the process's CPU budget
//! ([`agenda_calendar::cpu`]), a core's worth at a time ([`slots`]): a
//! burst of logins queues there instead of starving every other request
//! of CPU or filling the memory, and past [`MAX_WAITING`] is refused.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

use agenda_calendar::{ApiError, ApiResult};

/// Hashes waiting for a slot at most; past it a login is refused as
/// overload (503 with Retry-After) rather than queued for seconds.
pub const MAX_WAITING: usize = 256;

/// Hashes computed at once: as many as the machine has cores. Each takes
/// 19 MiB and a core for its whole run, so more at once only adds memory
/// and everyone's latency: with the CPU budget's 64 at once a replica
/// held 1.2 GB while logins poured in, and kept most of it (freed blocks
/// stayed in the blocking threads' malloc arenas), 1.7 GB per replica in
/// a soak at 20 logins/s.
fn slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores.clamp(1, 8))
    })
}

static WAITING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A hash waiting for its slot, counted in `.0` until dropped (also when
/// the request is abandoned).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One more waiting on `count`, or overload past `max`.
fn wait_turn(count: &std::sync::atomic::AtomicUsize, max: usize) -> ApiResult<Waiting<'_>> {
    let waiting = Waiting(count);
    if count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= max {
        return Err(
            ApiError::unavailable("too many logins at once; retry in 1 s")
                .with_details(serde_json::json!({"reason": "overloaded", "retry_after": 1})),
        );
    }
    Ok(waiting)
}

async fn limited<T: Send + 'static>(
    work: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let waiting = wait_turn(&WAITING, MAX_WAITING)?;
    let _slot = slots()
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("shutting down"))?;
    drop(waiting);
    agenda_calendar::cpu::run(work).await?
}

/// Hashes `password` with a random salt.
pub async fn hash(password: String) -> ApiResult<String> {
    limited(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(ApiError::internal)
    })
    .await
}

/// Whether `password` matches the stored `hash`.
pub async fn verify(password: String, hash: String) -> ApiResult<bool> {
    limited(move || {
        let parsed = PasswordHash::new(&hash).map_err(ApiError::internal)?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
}

/// Whether `password` matches `hash`; without a hash (no such account)
/// the same work is done against a hash of a random password and the
/// answer is no, so the time of a login does not tell whether a username
/// exists.
pub async fn verify_or_pretend(password: String, hash: Option<String>) -> ApiResult<bool> {
    static DECOY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    match hash {
        Some(hash) => verify(password, hash).await,
        None => {
            let decoy = DECOY.get_or_try_init(hash_of_random).await?.clone();
            verify(password, decoy).await.map(|_| false)
        }
    }
}

async fn hash_of_random() -> ApiResult<String> {
    hash(uuid::Uuid::new_v4().to_string()).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn past_the_waiting_cap_a_hash_is_refused_as_overload() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let count = AtomicUsize::new(2);
        let refused = super::wait_turn(&count, 2).err().expect("refused");
        assert_eq!(refused.status, 503);
        assert_eq!(refused.details["reason"], "overloaded");
        assert_eq!(
            count.load(Ordering::Relaxed),
            2,
            "the refused one is not counted"
        );
        let turn = super::wait_turn(&count, 3).expect("a turn");
        assert_eq!(count.load(Ordering::Relaxed), 3);
        drop(turn);
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn hashes_verify_only_their_password() {
        let h = super::hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify("correct horse".into(), h.clone())
            .await
            .unwrap());
        assert!(!super::verify("wrong horse".into(), h).await.unwrap());
    }

    /// No account: no match, after the same argon2 work as a real check.
    #[tokio::test]
    async fn a_missing_account_does_the_same_work_and_never_matches() {
        for p in ["", "correct horse"] {
            assert!(!super::verify_or_pretend(p.into(), None).await.unwrap());
        }
        let h = super::hash("correct horse".into()).await.unwrap();
        assert!(super::verify_or_pretend("correct horse".into(), Some(h))
            .await
            .unwrap());
    }
}

//! Password hashing (argon2id, PHC strings). Hashing is deliberately slow
//! (and takes 19 MiB each), so it runs within the process's CPU budget
//! ([`agenda_calendar::cpu`]): a burst of logins queues there instead of
//! starving every other request of CPU.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

use agenda_calendar::{ApiError, ApiResult};

async fn limited<T: Send + 'static>(
    work: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
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

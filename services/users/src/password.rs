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
}

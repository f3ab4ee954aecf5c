//! Password hashing (argon2id, PHC strings). Hashing is deliberately slow,
//! so it runs on the blocking pool, never on the async workers.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

use agenda_calendar::{ApiError, ApiResult};

/// Hashes `password` with a random salt.
pub async fn hash(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

/// Whether `password` matches the stored `hash`.
pub async fn verify(password: String, hash: String) -> ApiResult<bool> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(ApiError::internal)?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(ApiError::internal)?
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

//! Building the clients: S3 credentials and endpoint the standard ways, and the retry policy.

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::http::HttpBuilder;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How remote locations are reached, beyond what the environment says.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RemoteOptions {
    /// The S3 endpoint (`--s3-endpoint`), over `AWS_ENDPOINT_URL` and the profile's
    /// `endpoint_url`. `None`: AWS itself.
    pub s3_endpoint: Option<String>,
    /// How long a listing (and what it says of each object) is reused before it is asked again.
    /// `None`: [`LISTING_TTL`](super::LISTING_TTL).
    pub listing_ttl: Option<Duration>,
}

/// Retries with exponential backoff: 0.1, 0.2, 0.4, 0.8, 1.6 s. A refused connection fails in
/// about 3 s (a mount of a dead endpoint says so at once); a cluster that is failing over (a
/// node gone: about 3 s to notice) is waited for.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_secs(30),
    }
}

fn client_options(allow_http: bool) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(Duration::from_secs(5))
        // A whole request, body included: the largest GET is a few MiB.
        .with_timeout(Duration::from_secs(60))
}

/// The profile files' settings for `AWS_PROFILE` (or `default`): credentials from
/// `~/.aws/credentials`, region and endpoint from `~/.aws/config` (or the files that
/// `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` name). Missing files are no error.
fn profile_settings() -> io::Result<Vec<(AmazonS3ConfigKey, String)>> {
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = |var: &str, name: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
    };
    let load = |path: Option<PathBuf>| -> io::Result<Option<ini::Ini>> {
        let Some(path) = path.filter(|p| p.exists()) else {
            return Ok(None);
        };
        ini::Ini::load_from_file(&path).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {}", path.display(), ini_error_without_text(&e)),
            )
        })
    };
    let mut out = Vec::new();
    if let Some(creds) = load(file("AWS_SHARED_CREDENTIALS_FILE", "credentials"))? {
        if let Some(section) = creds.section(Some(profile.as_str())) {
            for (name, key) in [
                ("aws_access_key_id", AmazonS3ConfigKey::AccessKeyId),
                ("aws_secret_access_key", AmazonS3ConfigKey::SecretAccessKey),
                ("aws_session_token", AmazonS3ConfigKey::Token),
            ] {
                if let Some(v) = section.get(name) {
                    out.push((key, v.to_string()));
                }
            }
        }
    }
    if let Some(config) = load(file("AWS_CONFIG_FILE", "config"))? {
        let name = match profile.as_str() {
            "default" => "default".to_string(),
            p => format!("profile {p}"),
        };
        if let Some(section) = config.section(Some(name)) {
            for (name, key) in [
                ("region", AmazonS3ConfigKey::Region),
                ("endpoint_url", AmazonS3ConfigKey::Endpoint),
            ] {
                if let Some(v) = section.get(name) {
                    out.push((key, v.to_string()));
                }
            }
        }
    }
    Ok(out)
}

/// A profile file's parse error, without quoting the file's text (it may hold a secret).
fn ini_error_without_text(e: &ini::Error) -> String {
    match e {
        ini::Error::Io(e) => e.to_string(),
        ini::Error::Parse(p) => format!("not a valid profile file (line {})", p.line),
    }
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// An S3 client for `bucket`. Settings, later ones winning: the profile files, the `AWS_*`
/// environment, `options.s3_endpoint`. Returns the client and the endpoint it talks to (for
/// error messages; never a credential).
pub(super) fn s3(bucket: &str, options: &RemoteOptions) -> io::Result<(Arc<dyn ObjectStore>, String)> {
    let mut builder = AmazonS3Builder::new();
    for (key, value) in profile_settings()? {
        builder = builder.with_config(key, value);
    }
    // The environment over the profile (AmazonS3Builder::from_env, applied on top).
    for (name, value) in std::env::vars_os() {
        if let (Some(name), Some(value)) = (name.to_str(), value.to_str()) {
            if name.starts_with("AWS_") {
                if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
        }
    }
    if let Some(endpoint) = &options.s3_endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .unwrap_or_else(|| {
            let region = builder
                .get_config_value(&AmazonS3ConfigKey::Region)
                .unwrap_or_else(|| "us-east-1".into());
            format!("https://s3.{region}.amazonaws.com")
        });
    let has_credentials = builder
        .get_config_value(&AmazonS3ConfigKey::AccessKeyId)
        .is_some()
        || builder
            .get_config_value(&AmazonS3ConfigKey::SkipSignature)
            .is_some_and(|v| v == "true")
        || env_set("AWS_WEB_IDENTITY_TOKEN_FILE")
        || env_set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || env_set("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    if !has_credentials {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile in \
             ~/.aws/credentials (AWS_PROFILE), or AWS_SKIP_SIGNATURE=true for a public bucket",
        ));
    }
    super::runtime::install_tls_provider();
    let store = builder
        .with_bucket_name(bucket)
        .with_client_options(client_options(endpoint.starts_with("http://")))
        .with_retry(retry())
        .build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok((Arc::new(store), endpoint))
}

/// An HTTP client for the folder URL `base` (ending in `/`).
pub(super) fn http(base: &str) -> io::Result<Arc<dyn ObjectStore>> {
    super::runtime::install_tls_provider();
    let store = HttpBuilder::new()
        .with_url(base)
        .with_client_options(client_options(base.starts_with("http://")))
        .with_retry(retry())
        .build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok(Arc::new(store))
}

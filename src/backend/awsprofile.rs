//! S3 credentials and region from the AWS shared configuration files (`~/.aws/config`,
//! `~/.aws/credentials`, `AWS_PROFILE`), through the AWS SDK's own loader.
//!
//! `object_store` reads credentials from the environment, a web identity token, the ECS container
//! endpoint and the instance metadata service, but not from the shared files that `aws configure`
//! writes. When no key is in the environment and a profile is named (`-o s3.profile=NAME` or
//! `AWS_PROFILE`) or a shared file exists, the S3 backend asks the SDK's default chain instead
//! (static keys, `credential_process`, assumed roles, SSO caches as the SDK supports them) and hands
//! the result to `object_store` through [`ProfileCredentials`], refreshed before it expires.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::meta::region::ProvideRegion;
use aws_config::profile::{ProfileFileCredentialsProvider, ProfileFileRegionProvider};
use aws_config::provider_config::ProviderConfig;
use aws_config::BehaviorVersion;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::aws::AwsCredential;
use object_store::CredentialProvider;

use crate::error::{Error, Result};

/// Credentials are fetched again this long before they expire.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// The shared AWS configuration for a profile: its credentials and, when it names one, its region.
pub(crate) struct Profile {
    /// The credentials, for `AmazonS3Builder::with_credentials`.
    pub credentials: Arc<ProfileCredentials>,
    /// The profile's region, if it has one.
    pub region: Option<String>,
}

/// Whether an S3 location should take its credentials from the shared files: no key in the
/// environment (an `s3.profile` option overrides them), and a profile named or a shared file present. Returns the profile name to use
/// (`None` for the default profile).
pub(crate) fn wanted(option: Option<&str>) -> Option<Option<String>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(p) = option {
        return Some(Some(p.to_string()));
    }
    if env("AWS_ACCESS_KEY_ID").is_some() {
        return None; // keys in the environment win over AWS_PROFILE, as in the AWS CLI
    }
    if let Some(p) = env("AWS_PROFILE") {
        return Some(Some(p));
    }
    let home = env("HOME").map(PathBuf::from);
    let file = |var: &str, name: &str| {
        env(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
    };
    let present = [
        file("AWS_CONFIG_FILE", "config"),
        file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
    ]
    .into_iter()
    .flatten()
    .any(|p| p.is_file());
    present.then_some(None)
}

/// Loads `profile` (the default profile for `None`) and fetches its credentials once, so that a
/// missing profile or unusable credentials are reported when the repository is opened.
///
/// # Errors
/// [`Error::InvalidInput`] naming the profile and what the SDK said.
pub(crate) async fn load(profile: Option<String>, location: String) -> Result<Profile> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let (provider, region, name) = match profile {
        // A named profile is used alone, even over keys in the environment (as `--profile` is in
        // the AWS CLI); its absence is an error, not a fall-through to other sources.
        Some(p) => {
            let conf = ProviderConfig::default().with_http_client(http);
            let creds = ProfileFileCredentialsProvider::builder()
                .configure(&conf)
                .profile_name(&p)
                .build();
            let region = ProfileFileRegionProvider::builder()
                .configure(&conf)
                .profile_name(&p)
                .build()
                .region()
                .await;
            (SharedCredentialsProvider::new(creds), region, p)
        }
        // The default profile, then the rest of the SDK's chain (web identity, containers, IMDS).
        None => {
            let sdk = aws_config::defaults(BehaviorVersion::latest())
                .http_client(http)
                .load()
                .await;
            let Some(provider) = sdk.credentials_provider() else {
                return Err(Error::InvalidInput(format!(
                    "{location}: the AWS configuration provides no credentials"
                )));
            };
            (provider, sdk.region().cloned(), "default".to_string())
        }
    };
    let credentials = Arc::new(ProfileCredentials {
        provider,
        profile: name,
        cached: Mutex::new(None),
    });
    credentials.fetch().await.map_err(|e| {
        Error::InvalidInput(format!(
            "{location}: {e}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a profile of ~/.aws/config with AWS_PROFILE or -o s3.profile=NAME"
        ))
    })?;
    Ok(Profile {
        credentials,
        region: region.map(|r| r.to_string()),
    })
}

/// An `object_store` credential provider backed by the AWS SDK's chain for one profile.
pub(crate) struct ProfileCredentials {
    provider: SharedCredentialsProvider,
    profile: String,
    cached: Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl std::fmt::Debug for ProfileCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProfileCredentials({:?})", self.profile) // never the keys
    }
}

impl ProfileCredentials {
    async fn fetch(&self) -> std::result::Result<Arc<AwsCredential>, String> {
        let fresh =
            |exp: &Option<SystemTime>| exp.is_none_or(|e| e > SystemTime::now() + REFRESH_BEFORE);
        if let Some((c, exp)) = &*self.cached.lock().unwrap_or_else(|e| e.into_inner()) {
            if fresh(exp) {
                return Ok(Arc::clone(c));
            }
        }
        let got = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| match e {
                CredentialsError::CredentialsNotLoaded(_) => format!(
                    "AWS profile {:?} is not in the shared config and credentials files, or gives no credentials",
                    self.profile
                ),
                e => format!(
                    "AWS profile {:?}: {}",
                    self.profile,
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                ),
            })?;
        let c = Arc::new(AwsCredential {
            key_id: got.access_key_id().to_string(),
            secret_key: got.secret_access_key().to_string(),
            token: got.session_token().map(str::to_string),
        });
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Arc::clone(&c), got.expiry()));
        Ok(c)
    }
}

#[async_trait]
impl CredentialProvider for ProfileCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        self.fetch()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: e.into(),
            })
    }
}

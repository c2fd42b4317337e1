//! `kind = "s3"`: objects PUT into a bucket with the AWS SDK.
//!
//! Credentials come from the config (`access_key_id` + `secret_access_key`, optional
//! `session_token`) or else from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`. With `endpoint` (an S3-compatible store) requests are path-style.
//! The SDK retries throttling and 5xx a few times itself; [`super::ObjectSink`] retries what
//! is left with its own back-off, never dropping an object.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;

use super::batch::{CONTENT_TYPE, Object};
use crate::config::S3Destination;

/// Attempts the SDK makes per upload before our own back-off takes over.
const SDK_ATTEMPTS: u32 = 3;
/// Bound of one PUT (an 8 MiB object over a slow uplink included).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Region when neither config nor environment names one.
const DEFAULT_REGION: &str = "us-east-1";

/// A bucket and a client for it.
#[derive(Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    endpoint: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl S3Store {
    /// A client from config, else the environment.
    pub fn new(c: &S3Destination) -> Result<Self, String> {
        let region = c
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let creds = match (&c.access_key_id, &c.secret_access_key) {
            (Some(id), Some(secret)) => Credentials::new(
                id,
                secret,
                c.session_token.clone(),
                None,
                "edgerelay-config",
            ),
            (None, None) => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) => Credentials::new(
                    id,
                    secret,
                    c.session_token.clone().or_else(|| env("AWS_SESSION_TOKEN")),
                    None,
                    "edgerelay-environment",
                ),
                _ => {
                    return Err("no credentials: set access_key_id and secret_access_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment".into());
                }
            },
            _ => return Err("access_key_id and secret_access_key come in pairs".into()),
        };
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .credentials_provider(creds)
            .retry_config(RetryConfig::standard().with_max_attempts(SDK_ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(OPERATION_TIMEOUT)
                    .connect_timeout(CONNECT_TIMEOUT)
                    .build(),
            );
        let endpoint = match &c.endpoint {
            Some(ep) => {
                b = b.endpoint_url(ep).force_path_style(true);
                ep.clone()
            }
            None => format!("AWS {region}"),
        };
        Ok(Self {
            client: Client::from_conf(b.build()),
            bucket: c.bucket.clone(),
            endpoint,
        })
    }

    /// PUTs one object.
    pub async fn put(&self, o: &Object) -> Result<(), String> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&o.key)
            .content_type(CONTENT_TYPE)
            .body(ByteStream::from(o.body.clone()));
        if let Some(enc) = o.content_encoding {
            req = req.content_encoding(enc);
        }
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| DisplayErrorContext(e).to_string())
    }

    /// Bucket and endpoint, for logs.
    pub fn describe(&self) -> String {
        format!("s3://{} ({})", self.bucket, self.endpoint)
    }
}

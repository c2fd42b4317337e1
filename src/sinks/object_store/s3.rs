//! `kind = "s3"`: objects PUT into a bucket with the AWS SDK.
//!
//! Credentials come from the config (`access_key_id` + `secret_access_key`, optional
//! `session_token`) or else from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`. With `endpoint` (an S3-compatible store) requests are path-style.
//! Bodies over 8 MiB go up as a multipart upload. The SDK retries throttling and 5xx a few times itself; [`super::ObjectSink`] retries what
//! is left with its own back-off, never dropping an object.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::batch::Object;
use crate::config::S3Destination;
use crate::sinks::error::SinkError;

/// Attempts the SDK makes per upload before our own back-off takes over.
const SDK_ATTEMPTS: u32 = 3;
/// Bound of one PUT (an 8 MiB object over a slow uplink included).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies above this go up as a multipart upload (S3 takes up to 5 GiB in one PUT, but a
/// failed part is cheaper to resend than a failed whole).
const MULTIPART_THRESHOLD: usize = 8 << 20;
/// Size of each part but the last (S3's minimum is 5 MiB).
const PART_SIZE: usize = 8 << 20;
/// Region when neither config nor environment names one.
const DEFAULT_REGION: &str = "us-east-1";

/// A bucket and a client for it.
#[derive(Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    endpoint: String,
}

/// The object's user metadata as the SDK takes it (`x-amz-meta-*`); `None` when empty.
fn metadata(o: &Object) -> Option<std::collections::HashMap<String, String>> {
    (!o.metadata.is_empty()).then(|| {
        o.metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    })
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
                secret.expose(),
                c.session_token.as_deref().map(str::to_string),
                None,
                "edgerelay-config",
            ),
            (None, None) => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) => Credentials::new(
                    id,
                    secret,
                    c.session_token
                        .as_deref()
                        .map(str::to_string)
                        .or_else(|| env("AWS_SESSION_TOKEN")),
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
    pub async fn put(&self, o: &Object) -> Result<(), SinkError> {
        if o.body.len() > MULTIPART_THRESHOLD {
            return self.put_multipart(o).await;
        }
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&o.key)
            .content_type(o.content_type)
            .set_metadata(metadata(o))
            .body(ByteStream::from(o.body.clone()));
        if let Some(enc) = o.content_encoding {
            req = req.content_encoding(enc);
        }
        req.send().await.map(|_| ()).map_err(classify)
    }

    /// Uploads one object in parts; on failure the upload is aborted (best effort) so no
    /// parts linger, and the caller retries the whole object.
    async fn put_multipart(&self, o: &Object) -> Result<(), SinkError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&o.key)
            .content_type(o.content_type)
            .set_metadata(metadata(o))
            .set_content_encoding(o.content_encoding.map(str::to_string))
            .send()
            .await
            .map_err(classify)?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| SinkError::retry("multipart upload: no upload id in the answer"))?
            .to_string();
        match self.upload_parts(o, &upload_id).await {
            Ok(()) => {
                tracing::debug!(key = %o.key, bytes = o.body.len(), "multipart upload completed");
                Ok(())
            }
            Err(e) => {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&o.key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    async fn upload_parts(&self, o: &Object, upload_id: &str) -> Result<(), SinkError> {
        let mut parts = Vec::new();
        let mut start = 0;
        while start < o.body.len() {
            let end = (start + PART_SIZE).min(o.body.len());
            let number = parts.len() as i32 + 1;
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(&o.key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(o.body.slice(start..end)))
                .send()
                .await
                .map_err(classify)?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
            start = end;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&o.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    /// Bucket and endpoint, for logs.
    pub fn describe(&self) -> String {
        format!("s3://{} ({})", self.bucket, self.endpoint)
    }
}

/// The retry class of an S3 failure: the HTTP status when the store answered, a request the
/// SDK could not even build is permanent, timeouts and connection failures are retried.
fn classify<E: std::error::Error + Send + Sync + 'static>(
    e: SdkError<E, HttpResponse>,
) -> SinkError {
    let status = match &e {
        SdkError::ConstructionFailure(_) => {
            return SinkError::permanent(DisplayErrorContext(&e).to_string());
        }
        _ => e.raw_response().map(|r| r.status().as_u16()),
    };
    let text = DisplayErrorContext(&e).to_string();
    match status {
        Some(code) => SinkError::from_http_status(code, format!("HTTP {code}: {text}")),
        None => SinkError::retry(text),
    }
}

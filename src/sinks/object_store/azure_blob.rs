//! `kind = "azure-blob"`: block blobs with the official `azure_storage_blob` SDK.
//!
//! The SDK authenticates with a SAS in the URL (or Entra ID, not used here). Given a
//! container SAS URL we use it as is; given an account connection string we sign a
//! short-lived container SAS ourselves (service SAS, HMAC-SHA256 over the account key) for
//! each upload, so nothing needs renewing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use url::Url;

use azure_core::http::{ExponentialRetryOptions, NoFormat, RequestContent, RetryOptions};
use azure_storage_blob::models::BlockBlobClientUploadOptions;
use azure_storage_blob::{BlobClient, BlobClientOptions};

use super::batch::{Object, utc_ymdh};
use crate::clock::SharedClock;
use crate::config::AzureBlobDestination;
use crate::sinks::error::SinkError;

/// Service version the signed SAS claims (its string-to-sign layout depends on it).
const SAS_VERSION: &str = "2022-11-02";
/// Lifetime of a signed SAS: one upload, with room for retries and clock skew.
const SAS_TTL_MS: i64 = 60 * 60 * 1000;
/// Retries the SDK makes per upload before our own back-off takes over (its default, 8
/// retries over up to a minute, would hide an outage from the logs for that long).
const SDK_RETRIES: u32 = 3;
/// A signed SAS starts this far in the past, for clock skew against the service.
const SAS_SKEW_MS: i64 = 5 * 60 * 1000;

/// A storage account connection string (`AccountName=...;AccountKey=...;...`).
#[derive(Clone)]
pub struct StorageConnectionString {
    /// Account name.
    pub account_name: String,
    /// Decoded account key.
    pub account_key: Vec<u8>,
    /// Blob service endpoint, without a trailing slash.
    pub blob_endpoint: Url,
}

impl std::fmt::Debug for StorageConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConnectionString")
            .field("account_name", &self.account_name)
            .field("blob_endpoint", &self.blob_endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl StorageConnectionString {
    /// Parses a connection string; the key is never echoed in errors.
    pub fn parse(cs: &str) -> Result<Self, String> {
        let mut name = None;
        let mut key = None;
        let mut endpoint = None;
        let mut protocol = "https".to_string();
        let mut suffix = "core.windows.net".to_string();
        for part in cs.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                format!(
                    "connection string part without '=': {:?}",
                    part.split('=').next().unwrap_or("")
                )
            })?;
            match k {
                "AccountName" => name = Some(v.to_string()),
                "AccountKey" => key = Some(v.to_string()),
                "BlobEndpoint" => endpoint = Some(v.to_string()),
                "DefaultEndpointsProtocol" => protocol = v.to_string(),
                "EndpointSuffix" => suffix = v.to_string(),
                _ => {}
            }
        }
        let account_name = name.ok_or("connection string has no AccountName")?;
        let account_key = B64
            .decode(key.ok_or("connection string has no AccountKey")?)
            .map_err(|_| "AccountKey is not base64")?;
        let endpoint =
            endpoint.unwrap_or_else(|| format!("{protocol}://{account_name}.blob.{suffix}"));
        let blob_endpoint = Url::parse(endpoint.trim_end_matches('/'))
            .map_err(|e| format!("BlobEndpoint {endpoint:?}: {e}"))?;
        if !matches!(blob_endpoint.scheme(), "http" | "https") {
            return Err(format!("BlobEndpoint {endpoint:?}: not http(s)"));
        }
        Ok(Self {
            account_name,
            account_key,
            blob_endpoint,
        })
    }

    /// A service SAS (query string) for `container`, letting the holder create and write
    /// blobs from `now_ms - skew` until `now_ms + ttl`.
    pub fn container_sas(&self, container: &str, now_ms: i64) -> String {
        let start = iso_seconds(now_ms - SAS_SKEW_MS);
        let expiry = iso_seconds(now_ms + SAS_TTL_MS);
        let permissions = "cw";
        let resource = format!("/blob/{}/{}", self.account_name, container);
        // Layout for signed versions 2020-12-06 and later: permissions, start, expiry,
        // resource, identifier, IP, protocol, version, resource type, snapshot time,
        // encryption scope, then the five response-header overrides.
        let to_sign = [
            permissions,
            &start,
            &expiry,
            &resource,
            "",
            "",
            "",
            SAS_VERSION,
            "c",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
        .join("\n");
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.account_key).expect("HMAC takes any key length");
        mac.update(to_sign.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("sv", SAS_VERSION)
            .append_pair("sr", "c")
            .append_pair("sp", permissions)
            .append_pair("st", &start)
            .append_pair("se", &expiry)
            .append_pair("sig", &sig)
            .finish()
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of epoch milliseconds.
fn iso_seconds(ms: i64) -> String {
    let (y, mo, d, h) = utc_ymdh(ms);
    let secs = ms.div_euclid(1000).rem_euclid(3600);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{:02}:{:02}Z",
        secs / 60,
        secs % 60
    )
}

/// A container URL and how to authorize against it.
#[derive(Clone)]
pub struct ContainerTarget {
    /// `https://ACCOUNT.blob.core.windows.net/CONTAINER`, no query.
    pub container_url: Url,
    /// The SAS of a container SAS URL.
    pub sas: Option<String>,
}

impl std::fmt::Debug for ContainerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerTarget")
            .field("container_url", &self.container_url.as_str())
            .finish_non_exhaustive()
    }
}

impl ContainerTarget {
    /// Splits a container SAS URL; the SAS is never echoed in errors.
    pub fn from_sas_url(u: &str) -> Result<Self, String> {
        let mut url = Url::parse(u.trim()).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an https:// container SAS URL".into());
        }
        let sas = url.query().map(str::to_string).unwrap_or_default();
        if sas.is_empty() {
            return Err("has no SAS (nothing after '?'): copy the container's SAS URL".into());
        }
        url.set_query(None);
        url.set_fragment(None);
        if url.path().trim_matches('/').is_empty() {
            return Err(
                "names no container: https://ACCOUNT.blob.core.windows.net/CONTAINER?sv=...".into(),
            );
        }
        let trimmed = url.path().trim_end_matches('/').to_string();
        url.set_path(&trimmed);
        Ok(Self {
            container_url: url,
            sas: Some(sas),
        })
    }
}

/// A container and the means to write into it.
#[derive(Debug)]
pub struct AzureBlobStore {
    target: ContainerTarget,
    account: Option<(StorageConnectionString, String)>,
    clock: SharedClock,
}

impl AzureBlobStore {
    /// From config (validated already).
    pub fn new(c: &AzureBlobDestination, clock: SharedClock) -> Result<Self, String> {
        if let Some(u) = &c.sas_url {
            return Ok(Self {
                target: ContainerTarget::from_sas_url(u).map_err(|e| format!("sas_url: {e}"))?,
                account: None,
                clock,
            });
        }
        let cs = c
            .connection_string
            .as_deref()
            .ok_or("needs sas_url or connection_string")?;
        let cs = StorageConnectionString::parse(cs)?;
        let container = c
            .container
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or("connection_string needs container")?;
        let mut container_url = cs.blob_endpoint.clone();
        container_url
            .path_segments_mut()
            .map_err(|_| "BlobEndpoint cannot be a base URL")?
            .pop_if_empty()
            .push(&container);
        Ok(Self {
            target: ContainerTarget {
                container_url,
                sas: None,
            },
            account: Some((cs, container)),
            clock,
        })
    }

    /// The blob's URL with a SAS.
    fn blob_url(&self, key: &str) -> Result<Url, String> {
        let mut url = self.target.container_url.clone();
        url.path_segments_mut()
            .map_err(|_| "container URL cannot be a base URL")?
            .extend(key.split('/'));
        let sas = match (&self.target.sas, &self.account) {
            (Some(sas), _) => sas.clone(),
            (None, Some((cs, container))) => cs.container_sas(container, self.clock.now_ms()),
            (None, None) => String::new(),
        };
        url.set_query(Some(&sas));
        Ok(url)
    }

    /// Uploads one block blob (overwriting one of the same name).
    pub async fn put(&self, o: &Object) -> Result<(), SinkError> {
        let url = self.blob_url(&o.key).map_err(SinkError::permanent)?;
        let mut options = BlobClientOptions::default();
        options.client_options.retry = RetryOptions::exponential(ExponentialRetryOptions {
            max_retries: SDK_RETRIES,
            ..Default::default()
        });
        let client = BlobClient::new(url, None, Some(options))
            .map_err(|e| SinkError::permanent(e.to_string()))?;
        let options = BlockBlobClientUploadOptions {
            blob_content_type: Some(o.content_type.to_string()),
            blob_content_encoding: o.content_encoding.map(str::to_string),
            metadata: (!o.metadata.is_empty()).then(|| {
                o.metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect()
            }),
            ..Default::default()
        };
        let content: RequestContent<bytes::Bytes, NoFormat> = o.body.clone().into();
        client
            .upload(content, Some(options))
            .await
            .map(|_| ())
            .map_err(|e| match e.http_status() {
                Some(status) => {
                    let code = u16::from(status);
                    SinkError::from_http_status(code, format!("HTTP {code}: {e}"))
                }
                None => SinkError::retry(e.to_string()),
            })
    }

    /// Container URL (no SAS), for logs.
    pub fn describe(&self) -> String {
        self.target.container_url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AZURITE: &str = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;";

    #[test]
    fn connection_strings_parse_and_sign() {
        let cs = StorageConnectionString::parse(AZURITE).unwrap();
        assert_eq!(cs.account_name, "devstoreaccount1");
        assert_eq!(
            cs.blob_endpoint.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        let sas = cs.container_sas("archive", 1_735_732_800_000);
        assert!(sas.starts_with("sv=2022-11-02&sr=c&sp=cw&st=2025-01-01T11%3A55%3A00Z&se=2025-01-01T13%3A00%3A00Z&sig="), "{sas}");
        let cloud = StorageConnectionString::parse(
            "AccountName=acct;AccountKey=AAAA;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(
            cloud.blob_endpoint.as_str(),
            "https://acct.blob.core.windows.net/"
        );
        assert!(StorageConnectionString::parse("AccountName=a").is_err());
        assert!(StorageConnectionString::parse("AccountName=a;AccountKey=!!").is_err());
        assert!(!format!("{cs:?}").contains("Eby8"));
    }

    #[test]
    fn sas_urls_split_into_container_and_sas() {
        let t = ContainerTarget::from_sas_url(
            "https://acct.blob.core.windows.net/archive/?sv=2022-11-02&sp=cw&sig=abc%3D",
        )
        .unwrap();
        assert_eq!(
            t.container_url.as_str(),
            "https://acct.blob.core.windows.net/archive"
        );
        assert_eq!(t.sas.as_deref(), Some("sv=2022-11-02&sp=cw&sig=abc%3D"));
        assert!(
            ContainerTarget::from_sas_url("https://acct.blob.core.windows.net/archive").is_err()
        );
        assert!(
            ContainerTarget::from_sas_url("https://acct.blob.core.windows.net/?sig=x").is_err()
        );
        assert!(ContainerTarget::from_sas_url("ftp://acct/archive?sig=x").is_err());
    }
}

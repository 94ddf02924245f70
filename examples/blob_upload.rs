//! Upload a file to Azure Blob Storage from an Azure Pipelines job, authenticated by the job's
//! service connection (workload identity federation: no secret stored anywhere).
//!
//! ```text
//! cargo run --example blob_upload -- https://<account>.blob.core.windows.net <container> <file>
//! ```
//!
//! In the pipeline, run it in an AzureCLI@2 step (which exports the service connection's
//! AZURESUBSCRIPTION_* variables) and map SYSTEM_ACCESSTOKEN:
//!
//! ```yaml
//! - task: AzureCLI@2
//!   inputs:
//!     azureSubscription: my-service-connection   # workload identity federation
//!     scriptType: bash
//!     scriptLocation: inlineScript
//!     inlineScript: cargo run --example blob_upload -- https://myaccount.blob.core.windows.net artifacts target/release/app
//!   env:
//!     SYSTEM_ACCESSTOKEN: $(System.AccessToken)
//! ```
//!
//! The service connection's identity needs the "Storage Blob Data Contributor" role on the
//! account or container. Outside a pipeline this explains what is missing and exits with 2.

use azure_core::{
    error::ErrorKind,
    http::{RequestContent, StatusCode, Url},
};
use azure_pipelines_credential::{AzurePipelinesCredential, is_unavailable};
use azure_storage_blob::BlobServiceClient;
use std::{path::Path, process::ExitCode};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [account_url, container, file] = args.as_slice() else {
        eprintln!(
            "usage: blob_upload <account URL, e.g. https://myaccount.blob.core.windows.net> \
             <container> <file>"
        );
        return ExitCode::from(2);
    };
    match upload(account_url, container, Path::new(file)).await {
        Ok(url) => {
            println!("uploaded {file} to {url}");
            ExitCode::SUCCESS
        }
        Err(e) if is_unavailable(&e) => {
            // Not in a pipeline step with a service connection: say what to set.
            eprintln!("{e}");
            eprintln!(
                "\nThis example authenticates as an Azure Pipelines service connection. Run it \
                 in an AzureCLI@2 step with `env: SYSTEM_ACCESSTOKEN: $(System.AccessToken)` (see \
                 the top of examples/blob_upload.rs). On a laptop, use \
                 PipelineAwareCredential::new(None) instead, which falls back to `az login`."
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("upload failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn upload(account_url: &str, container: &str, file: &Path) -> azure_core::Result<Url> {
    // Fails as *unavailable* when the AZURESUBSCRIPTION_* variables or SYSTEM_ACCESSTOKEN are
    // missing, before any request.
    let credential = AzurePipelinesCredential::from_env(None)?;
    let service = BlobServiceClient::new(Url::parse(account_url)?, Some(credential), None)?;

    let container = service.blob_container_client(container);
    match container.create(None).await {
        Ok(_) => {}
        // Created by an earlier run: fine.
        Err(e) if matches!(e.kind(), ErrorKind::HttpResponse { status, .. } if *status == StatusCode::Conflict) =>
            {}
        Err(e) => return Err(e),
    }

    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "upload".to_owned());
    let data = std::fs::read(file).map_err(|e| {
        azure_core::Error::with_error(ErrorKind::Io, e, format!("cannot read {}", file.display()))
    })?;
    let blob = container.blob_client(&name);
    blob.upload(RequestContent::from(data), None).await?;
    Ok(blob.url().clone())
}

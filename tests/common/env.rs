//! Environment variables that tests which read the process environment clear first, so that
//! the machine running them cannot put them in a pipeline step or bring in other credentials.

/// What the emulator's `environment()` sets: a pipeline step with a service connection.
pub const PIPELINE_VARS: [&str; 6] = [
    "SYSTEM_OIDCREQUESTURI",
    "SYSTEM_ACCESSTOKEN",
    "AZURESUBSCRIPTION_TENANT_ID",
    "AZURESUBSCRIPTION_CLIENT_ID",
    "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
    "AZURE_AUTHORITY_HOST",
];

/// Variables that bring in other credentials (workload identity, managed identity), choose
/// the chain's members or change azure_identity's tenant rule.
pub const OTHER_CREDENTIAL_VARS: [&str; 11] = [
    "AZURE_TOKEN_CREDENTIALS",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_IDENTITY_DISABLE_MULTITENANTAUTH",
];

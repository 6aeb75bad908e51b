// The function app on a Flex Consumption plan (Linux, Python 3.11), running as the user-assigned
// managed identity. Every app setting the code reads (shared/settings.py ALL_SETTINGS) is set here;
// tests/test_infra.py keeps this list and the settings module in agreement.
// Flex Consumption takes the runtime from functionAppConfig: FUNCTIONS_WORKER_RUNTIME,
// FUNCTIONS_EXTENSION_VERSION and WEBSITE_RUN_FROM_PACKAGE must not be app settings here.

param name string
param planName string
param location string
param tags object

@description('azd service name (azure.yaml) this app is deployed as.')
param serviceName string

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity (selects it in DefaultAzureCredential and the host).')
param identityClientId string

param storageAccountName string

@description('Table endpoint of the storage account (https://{account}.table.{suffix}/).')
param storageTableEndpoint string

@description('URL of the blob container that holds the deployment package.')
param deploymentContainerUrl string

param applicationInsightsName string

@description('Vault URI (KEY_VAULT_URL).')
param keyVaultUri string

@description('The partner\'s Entra tenant (PARTNER_TENANT_ID): GUID or domain.')
param partnerTenantId string

@description('Request table name (UPGRADE_REQUESTS_TABLE); the table is created by the storage module.')
param upgradeRequestsTable string

@description('CALLER_AUDIENCES: the API app registration\'s Application ID URI and client id.')
param callerAudiences string

@description('CALLER_TENANT_IDS: tenant GUIDs whose callers are accepted (the app registration\'s tenant).')
param callerTenantIds string

@description('The app\'s tunables by setting name (main.bicep: the code defaults merged with overrides).')
param settings object

@minValue(1)
@maxValue(1000)
@description('Most instances the app scales out to. Each instance calls Partner Center, which throttles per partner.')
param maximumInstanceCount int = 40

@description('VNET_ENABLED variant: the subnet (delegated to Microsoft.App/environments) the app sends all its outbound traffic through. Empty: no integration.')
param virtualNetworkSubnetId string = ''

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Flex Consumption zone redundancy is offered only in some regions (and wants ZRS storage); left off so the template deploys in every Flex region. A lost instance's claimed requests resume after their lease (request table + timer)
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222:The API is called by Power Automate flows and webhooks over the internet; callers authenticate with Microsoft Entra ID bearer tokens carrying an app role (CALLER_AUTH=entra), over HTTPS only (TLS 1.2+)
  // checkov:skip=CKV_AZURE_17:Callers authenticate with Entra ID bearer tokens. App Service only forwards a client certificate to the code, which would have to validate it; enabling it without that adds no security and breaks callers that have none
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales per demand and has no fixed worker count (numberOfWorkers); a lost instance is replaced by the platform and its claimed requests are picked up after REQUEST_LEASE_SECONDS
  // checkov:skip=CKV_AZURE_213:Flex Consumption instances are managed by the Functions scale controller, not App Service health check; the app has no health route (its dependencies' failures are answered per request)
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    // Outbound only: callers (Power Automate, webhooks) still reach the app over the internet.
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: 2048
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // All outbound traffic through the subnet (its routes and NSGs apply), not only private ranges.
      vnetRouteAllEnabled: !empty(virtualNetworkSubnetId)
      appSettings: [
        // Host storage, identity-based (no connection string): the host and the request table use
        // the managed identity. The code reads the table endpoint from these settings too.
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storageAccountName
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: storageTableEndpoint
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        // DefaultAzureCredential (Key Vault, tables) picks the user-assigned identity by this.
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        // Telemetry with Entra auth (local auth is disabled on the component).
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
        // host.json telemetryMode OpenTelemetry: the worker streams the app's own telemetry (the app
        // configures the Azure Monitor distro with the identity above: shared/telemetry/setup.py) and
        // each invocation runs in the host's request trace context.
        {
          name: 'PYTHON_ENABLE_OPENTELEMETRY'
          value: 'true'
        }
        // The app's own settings (shared/settings.py).
        {
          name: 'KEY_VAULT_URL'
          value: keyVaultUri
        }
        {
          name: 'PARTNER_TENANT_ID'
          value: partnerTenantId
        }
        {
          name: 'UPGRADE_REQUESTS_TABLE'
          value: upgradeRequestsTable
        }
        // Callers sign in with Entra ID: routes are anonymous at the host, and the app checks the
        // bearer token and its app role itself (shared/api/caller_auth.py).
        {
          name: 'CALLER_AUTH'
          value: 'entra'
        }
        {
          name: 'CALLER_AUDIENCES'
          value: callerAudiences
        }
        {
          name: 'CALLER_TENANT_IDS'
          value: callerTenantIds
        }
        {
          name: 'APP_ID_SECRET_NAME'
          value: settings.APP_ID_SECRET_NAME
        }
        {
          name: 'APP_SECRET_SECRET_NAME'
          value: settings.APP_SECRET_SECRET_NAME
        }
        {
          name: 'REFRESH_TOKEN_SECRET_NAME'
          value: settings.REFRESH_TOKEN_SECRET_NAME
        }
        {
          name: 'PARTNER_CENTER_ENDPOINT'
          value: settings.PARTNER_CENTER_ENDPOINT
        }
        {
          name: 'PARTNER_CENTER_SCOPE'
          value: settings.PARTNER_CENTER_SCOPE
        }
        {
          name: 'AZURE_AUTHORITY_HOST'
          value: settings.AZURE_AUTHORITY_HOST
        }
        {
          name: 'SECRET_CACHE_SECONDS'
          value: settings.SECRET_CACHE_SECONDS
        }
        {
          name: 'PARTNER_CENTER_TIMEOUT_SECONDS'
          value: settings.PARTNER_CENTER_TIMEOUT_SECONDS
        }
        {
          name: 'PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS'
          value: settings.PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS
        }
        {
          name: 'HTTP_DEADLINE_SECONDS'
          value: settings.HTTP_DEADLINE_SECONDS
        }
        {
          name: 'PENDING_SCHEDULE'
          value: settings.PENDING_SCHEDULE
        }
        {
          name: 'PENDING_CONCURRENCY'
          value: settings.PENDING_CONCURRENCY
        }
        {
          name: 'PENDING_MAX_ATTEMPTS'
          value: settings.PENDING_MAX_ATTEMPTS
        }
        {
          name: 'PENDING_RUN_SECONDS'
          value: settings.PENDING_RUN_SECONDS
        }
        {
          name: 'REQUEST_LEASE_SECONDS'
          value: settings.REQUEST_LEASE_SECONDS
        }
        {
          name: 'STATUS_POLL_SECONDS'
          value: settings.STATUS_POLL_SECONDS
        }
        {
          name: 'REQUEST_RETENTION_DAYS'
          value: settings.REQUEST_RETENTION_DAYS
        }
        {
          name: 'CAMPAIGN_MAX_MEMBERS'
          value: settings.CAMPAIGN_MAX_MEMBERS
        }
        {
          name: 'CAMPAIGN_DEFAULT_PER_HOUR'
          value: settings.CAMPAIGN_DEFAULT_PER_HOUR
        }
      ]
    }
  }
}

// No FTP and no basic-auth (publishing profile) deployments: azd and `az functionapp deploy` use
// Entra tokens.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName

// `azd up` entry point: one resource group with the function app (Flex Consumption, Python 3.11),
// its user-assigned managed identity, an identity-only storage account, an RBAC-mode Key Vault and
// Application Insights on a Log Analytics workspace. No key, connection string or secret value is
// created, passed or output: every data-plane access is Entra ID + a role scoped to one resource.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names the resource group and seeds the resource name suffix.')
param environmentName string

@minLength(1)
@description('Region of every resource (one that offers Flex Consumption).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@minLength(1)
@description('The partner\'s Entra tenant (GUID or domain) that owns the Partner Center account and the app registration: PARTNER_TENANT_ID.')
param partnerTenantId string

@description('Object id of the operator who stores the partner app\'s secrets; azd passes the signed-in principal. Empty: no vault grant for the operator.')
param operatorPrincipalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
@description('Type of operatorPrincipalId.')
param operatorPrincipalType string = 'User'

@description('Overrides of the app\'s tunables, by setting name (shared/settings.py), e.g. {"PENDING_CONCURRENCY": "8"}. Values are strings.')
param appSettingOverrides object = {}

@description('Request table name (UPGRADE_REQUESTS_TABLE).')
param upgradeRequestsTable string = 'productupgraderequests'

@minValue(1)
@maxValue(1000)
@description('Most Flex Consumption instances the app scales out to.')
param maximumInstanceCount int = 40

@description('VNET_ENABLED: storage and Key Vault only behind private endpoints (public access Disabled, deny by default), the app\'s outbound traffic through a virtual network. Default false: public endpoints, identity-only access (docs/deploying.md).')
param vnetEnabled bool = false

@description('Resource group name; default rg-{environmentName}.')
param resourceGroupName string = ''

@description('Application ID URI of the API\'s app registration: the audience of caller tokens (CALLER_AUDIENCES). Default api://csp-upgrades-{environmentName}.')
param callerApplicationIdUri string = ''

// The code's defaults (shared/settings.py) for every optional setting except UPGRADE_REQUESTS_TABLE
// (a parameter above, because the table is created here). tests/test_infra.py checks they agree.
var settingDefaults = {
  APP_ID_SECRET_NAME: 'partner-center-app-id'
  APP_SECRET_SECRET_NAME: 'partner-center-app-secret'
  REFRESH_TOKEN_SECRET_NAME: 'partner-center-refresh-token'
  PARTNER_CENTER_ENDPOINT: 'https://api.partnercenter.microsoft.com'
  PARTNER_CENTER_SCOPE: 'https://api.partnercenter.microsoft.com/user_impersonation'
  AZURE_AUTHORITY_HOST: 'https://login.microsoftonline.com'
  SECRET_CACHE_SECONDS: '300'
  PARTNER_CENTER_TIMEOUT_SECONDS: '15'
  PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS: '5'
  HTTP_DEADLINE_SECONDS: '100'
  PENDING_SCHEDULE: '0 */5 * * * *'
  PENDING_CONCURRENCY: '4'
  PENDING_MAX_ATTEMPTS: '8'
  PENDING_RUN_SECONDS: '240'
  REQUEST_LEASE_SECONDS: '300'
  STATUS_POLL_SECONDS: '120'
  REQUEST_RETENTION_DAYS: '400'
  CAMPAIGN_MAX_MEMBERS: '50000'
  CAMPAIGN_DEFAULT_PER_HOUR: '600'
}

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-${resourceToken}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
    identityPrincipalId: identity.outputs.principalId
  }
}

// The campaign dashboard (docs/campaigns.md): a workbook over Application Insights.
module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: 'app-package'
    tableName: upgradeRequestsTable
    identityPrincipalId: identity.outputs.principalId
    privateNetworking: vnetEnabled
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    identityPrincipalId: identity.outputs.principalId
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
    workspaceId: monitoring.outputs.workspaceId
    privateNetworking: vnetEnabled
  }
}

// VNET_ENABLED only: the network, and the private endpoints through which the app reaches its storage
// account and Key Vault once their public endpoints are closed (docs/deploying.md, "Private networking").
module network 'modules/network.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    name: 'vnet-${resourceToken}'
    location: location
    tags: tags
  }
}

module privateEndpoints 'modules/private-endpoints.bicep' = if (vnetEnabled) {
  name: 'private-endpoints'
  scope: rg
  params: {
    location: location
    tags: tags
    virtualNetworkId: network.outputs.virtualNetworkId
    subnetId: network.outputs.privateEndpointSubnetId
    storageAccountId: storage.outputs.id
    keyVaultId: keyVault.outputs.id
  }
}

// Who may call: the API's app registration with its two app roles (Microsoft Graph extension).
module callerApp 'modules/callerapp.bicep' = {
  name: 'callerapp'
  scope: rg
  params: {
    uniqueName: 'csp-product-upgrades-${resourceToken}'
    displayName: 'CSP product upgrades API (${environmentName})'
    applicationIdUri: !empty(callerApplicationIdUri) ? callerApplicationIdUri : 'api://csp-upgrades-${environmentName}'
    idSeed: '${subscription().id}/${environmentName}'
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    storageTableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultUri: keyVault.outputs.uri
    partnerTenantId: partnerTenantId
    upgradeRequestsTable: storage.outputs.tableName
    callerAudiences: callerApp.outputs.audiences
    callerTenantIds: tenant().tenantId
    settings: union(settingDefaults, appSettingOverrides)
    maximumInstanceCount: maximumInstanceCount
    virtualNetworkSubnetId: vnetEnabled ? network.outputs.appSubnetId : ''
  }
}

// Read by azd (and the README's commands) after provisioning. Names and URLs only: nothing secret.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output UPGRADE_REQUESTS_TABLE string = storage.outputs.tableName
output KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URL string = keyVault.outputs.uri
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output LOG_ANALYTICS_WORKSPACE_NAME string = monitoring.outputs.workspaceName
output CAMPAIGN_WORKBOOK_ID string = workbook.outputs.workbookId
output FUNCTION_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output PARTNER_TENANT_ID string = partnerTenantId
// For the connector (apiProperties.json resourceUri) and role assignments (docs/security.md).
output CALLER_APPLICATION_ID_URI string = callerApp.outputs.applicationIdUri
output CALLER_APP_CLIENT_ID string = callerApp.outputs.clientId
output CALLER_AUDIENCES string = callerApp.outputs.audiences

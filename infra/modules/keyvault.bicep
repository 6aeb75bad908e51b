// The vault holding the partner app's credentials (app id, client secret, App+User refresh token).
// RBAC mode only: no access policies. The secrets are NOT created here (no secret value belongs in a
// template, a parameter or a deployment's history); the operator stores them after `azd up`
// (README "Deploy").

param name string
param location string
param tags object

@description('Principal (object) id of the function app\'s managed identity.')
param identityPrincipalId string

@description('Object id of the operator who stores the secrets (azd passes the signed-in principal). Empty: no grant.')
param operatorPrincipalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('VNET_ENABLED variant: no public endpoint, deny by default; reached through its private endpoint (modules/private-endpoints.bicep).')
param privateNetworking bool = false

@description('Log Analytics workspace that receives the vault\'s audit log (who read or wrote which secret).')
param workspaceId string

// Built-in role "Key Vault Secrets Officer". The app must WRITE: every refresh token Entra rotates is
// written back as a new version of REFRESH_TOKEN_SECRET_NAME, so "Key Vault Secrets User" (read only)
// is not enough. Key Vault has no built-in role that allows setting a secret without also deleting
// one (Officer = all secret data actions), so the grant is kept as narrow as built-in roles allow:
// scoped to this vault only, which holds nothing but this app's three secrets. Soft delete + purge
// protection make a deleted secret recoverable for 90 days.
var keyVaultSecretsOfficerRoleId = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:Default-deny with public access Disabled is the VNET_ENABLED variant (privateNetworking, tests/test_infra.py checks it). Without it a Flex Consumption app has no fixed outbound IPs and is not a trusted service, so a vault firewall would lock the app out; access is Entra ID + RBAC only (no access policies), audit-logged
  // checkov:skip=CKV_AZURE_189:Same reason as CKV_AZURE_109: public network access is Disabled in the VNET_ENABLED variant; otherwise every request needs an Entra token with a role on this vault
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: privateNetworking ? {
      defaultAction: 'Deny'
      bypass: 'None'
    } : {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource appSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identityPrincipalId, keyVaultSecretsOfficerRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficerRoleId)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The operator stores the three secrets once and re-consents when the refresh token expires, both
// data-plane writes, so the same role on the same vault. Management roles (Owner, Contributor) do not
// grant data-plane access in RBAC mode.
resource operatorSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, keyVaultSecretsOfficerRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficerRoleId)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource auditLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri

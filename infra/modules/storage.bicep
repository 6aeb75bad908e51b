// The app's own storage account, reached only with Entra ID (shared keys are disabled, so no
// connection string or account key exists to leak). It holds:
// - the Functions host's state (blobs: function keys, timer schedule monitor, singleton locks);
// - the Flex Consumption deployment package container;
// - the request table (UPGRADE_REQUESTS_TABLE).
// The account is dedicated to this app, so account scope is this app's data only.

param name string
param location string
param tags object

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Table of upgrade requests (UPGRADE_REQUESTS_TABLE).')
param tableName string

@description('Principal (object) id of the function app\'s managed identity.')
param identityPrincipalId string

@description('VNET_ENABLED variant: no public endpoint, deny by default; reached through private endpoints (modules/private-endpoints.bicep).')
param privateNetworking bool = false

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
@description('Replication. The request table is the app\'s record of accepted work: choose ZRS/GZRS where the region has zones.')
param skuName string = 'Standard_LRS'

// Built-in roles (role definition ids are the same in every subscription):
// - Storage Blob Data Owner: the Functions host's minimum for identity-based AzureWebJobsStorage (it
//   creates its containers and takes blob leases for timer singletons), and the deployment package.
var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
// - Storage Table Data Contributor: the request table (read, insert, ETag-conditional update) and
//   its create-if-missing at start-up, which is an account-level operation; the host also writes its
//   diagnostic events to tables on this connection.
var storageTableDataContributorRoleId = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
// Not granted: Storage Queue Data Contributor. The host uses queues on AzureWebJobsStorage only for
// blob triggers, queue triggers and Durable Functions; this app has HTTP and timer triggers only
// (timer locks and schedule status are blobs). Grant it if such a trigger is ever added.

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:Default-deny with public access Disabled is the VNET_ENABLED variant (privateNetworking, tests/test_infra.py checks it). Without it the Flex Consumption app has no fixed outbound IPs and is not a trusted service, so default-deny would lock the host out; shared keys are disabled, so every request needs an Entra token with a role on this account
  // checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: public network access is Disabled in the VNET_ENABLED variant; otherwise identity-only access, blob public access disabled (allowBlobPublicAccess false)
  // checkov:skip=CKV_AZURE_206:Default LRS keeps azd up working in every Flex Consumption region (ZRS needs availability zones, GRS a paired region); production sets the skuName parameter to ZRS/GZRS where the region offers it
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    // Private: nothing public, no trusted-service bypass (nothing of this app needs one).
    networkAcls: privateNetworking ? {
      defaultAction: 'Deny'
      bypass: 'None'
    } : {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource requestTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: tableName
}

resource blobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identityPrincipalId, storageBlobDataOwnerRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource tableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identityPrincipalId, storageTableDataContributorRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributorRoleId)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerUrl string = '${storage.properties.primaryEndpoints.blob}${deploymentContainer.name}'
output tableName string = requestTable.name

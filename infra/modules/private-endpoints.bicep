// Private endpoints of the VNET_ENABLED variant: the storage account's blob and table services and the
// Key Vault, each with its private DNS zone linked to the network, so that the app's usual host names
// ({account}.blob/.table.core.windows.net, {vault}.vault.azure.net) resolve to private addresses inside
// the network while the resources themselves refuse every public request (publicNetworkAccess Disabled).
//
// Which storage services: blob (the Functions host's state: keys, timer schedule monitor, singleton
// locks; and the Flex Consumption deployment package) and table (the request table; the host's
// diagnostic events). Not queue: the app has HTTP and timer triggers only, so nothing reads or writes
// queues (modules/storage.bicep grants no queue role either). Not file: Flex Consumption mounts no share.
//
// Azure Verified Modules, versions pinned (those Azure-Samples/functions-quickstart-python-http-azd uses):
// - avm/res/network/private-dns-zone: the zone and its virtual-network link in one call, with the
//   link's name, registration (off) and `global` location done the way the zone requires;
// - avm/res/network/private-endpoint: the endpoint and its DNS zone group in one call, so no endpoint
//   can be declared without the group that writes its A record into the zone (an endpoint without it
//   resolves nowhere, and the app would fail with DNS answers pointing at the closed public endpoint).

param location string
param tags object

@description('Resource id of the virtual network the zones are linked to.')
param virtualNetworkId string

@description('Resource id of the subnet that holds the private endpoints.')
param subnetId string

@description('Resource id of the app\'s storage account.')
param storageAccountId string

@description('Resource id of the app\'s Key Vault.')
param keyVaultId string

var storageName = last(split(storageAccountId, '/'))
var vaultName = last(split(keyVaultId, '/'))

module blobZone 'br/public:avm/res/network/private-dns-zone:0.7.1' = {
  name: 'zone-blob'
  params: {
    name: 'privatelink.blob.${environment().suffixes.storage}'
    location: 'global'
    tags: tags
    virtualNetworkLinks: [
      {
        name: 'link-blob'
        virtualNetworkResourceId: virtualNetworkId
        registrationEnabled: false
      }
    ]
  }
}

module tableZone 'br/public:avm/res/network/private-dns-zone:0.7.1' = {
  name: 'zone-table'
  params: {
    name: 'privatelink.table.${environment().suffixes.storage}'
    location: 'global'
    tags: tags
    virtualNetworkLinks: [
      {
        name: 'link-table'
        virtualNetworkResourceId: virtualNetworkId
        registrationEnabled: false
      }
    ]
  }
}

module vaultZone 'br/public:avm/res/network/private-dns-zone:0.7.1' = {
  name: 'zone-vault'
  params: {
    name: 'privatelink.vaultcore.azure.net'
    location: 'global'
    tags: tags
    virtualNetworkLinks: [
      {
        name: 'link-vault'
        virtualNetworkResourceId: virtualNetworkId
        registrationEnabled: false
      }
    ]
  }
}

module blobEndpoint 'br/public:avm/res/network/private-endpoint:0.11.0' = {
  name: 'pe-blob'
  params: {
    name: 'pe-${storageName}-blob'
    location: location
    tags: tags
    subnetResourceId: subnetId
    privateLinkServiceConnections: [
      {
        name: 'blob'
        properties: {
          privateLinkServiceId: storageAccountId
          groupIds: [
            'blob'
          ]
        }
      }
    ]
    privateDnsZoneGroup: {
      name: 'blob'
      privateDnsZoneGroupConfigs: [
        {
          name: 'blob'
          privateDnsZoneResourceId: blobZone.outputs.resourceId
        }
      ]
    }
  }
}

module tableEndpoint 'br/public:avm/res/network/private-endpoint:0.11.0' = {
  name: 'pe-table'
  params: {
    name: 'pe-${storageName}-table'
    location: location
    tags: tags
    subnetResourceId: subnetId
    privateLinkServiceConnections: [
      {
        name: 'table'
        properties: {
          privateLinkServiceId: storageAccountId
          groupIds: [
            'table'
          ]
        }
      }
    ]
    privateDnsZoneGroup: {
      name: 'table'
      privateDnsZoneGroupConfigs: [
        {
          name: 'table'
          privateDnsZoneResourceId: tableZone.outputs.resourceId
        }
      ]
    }
  }
}

module vaultEndpoint 'br/public:avm/res/network/private-endpoint:0.11.0' = {
  name: 'pe-vault'
  params: {
    name: 'pe-${vaultName}-vault'
    location: location
    tags: tags
    subnetResourceId: subnetId
    privateLinkServiceConnections: [
      {
        name: 'vault'
        properties: {
          privateLinkServiceId: keyVaultId
          groupIds: [
            'vault'
          ]
        }
      }
    ]
    privateDnsZoneGroup: {
      name: 'vault'
      privateDnsZoneGroupConfigs: [
        {
          name: 'vault'
          privateDnsZoneResourceId: vaultZone.outputs.resourceId
        }
      ]
    }
  }
}

// The private network of the VNET_ENABLED variant (main.bicep `vnetEnabled`): one virtual network with
// two subnets.
// - `private-endpoints`: the private endpoints of the storage account and the Key Vault
//   (modules/private-endpoints.bicep).
// - `app`: the function app's outbound integration (Flex Consumption: a subnet delegated to
//   Microsoft.App/environments, used by this one app only). Every outbound call of the app leaves
//   through it: storage and Key Vault by their private endpoints, Partner Center, Entra ID and
//   Application Insights through the network's default outbound path (docs/deploying.md).
//
// Azure Verified Module, version pinned (the one Azure-Samples/functions-quickstart-python-http-azd
// uses): it declares the network and its subnets as one resource, so a subnet is never recreated
// apart from its network (a known failure of hand-written child `subnets` resources on redeploy), and
// it validates the delegation and policy properties against its own tested schema.

param name string
param location string
param tags object

@description('Address space of the network (choose one that does not overlap networks it may be peered with).')
param addressPrefix string = '10.0.0.0/16'

@description('Private endpoints subnet, inside addressPrefix (3 endpoints: a /28 would do).')
param privateEndpointSubnetPrefix string = '10.0.1.0/24'

@description('The app\'s subnet, inside addressPrefix. Flex Consumption takes one address per instance: a /24 leaves room for maximumInstanceCount up to ~250.')
param appSubnetPrefix string = '10.0.2.0/24'

var privateEndpointSubnetName = 'private-endpoints'
var appSubnetName = 'app'

module virtualNetwork 'br/public:avm/res/network/virtual-network:0.6.1' = {
  name: 'virtual-network'
  params: {
    name: name
    location: location
    tags: tags
    addressPrefixes: [
      addressPrefix
    ]
    subnets: [
      {
        name: privateEndpointSubnetName
        addressPrefix: privateEndpointSubnetPrefix
        privateEndpointNetworkPolicies: 'Disabled'
        privateLinkServiceNetworkPolicies: 'Enabled'
      }
      {
        name: appSubnetName
        addressPrefix: appSubnetPrefix
        privateEndpointNetworkPolicies: 'Disabled'
        privateLinkServiceNetworkPolicies: 'Enabled'
        delegation: 'Microsoft.App/environments'
      }
    ]
  }
}

output virtualNetworkId string = virtualNetwork.outputs.resourceId
output privateEndpointSubnetId string = '${virtualNetwork.outputs.resourceId}/subnets/${privateEndpointSubnetName}'
output appSubnetId string = '${virtualNetwork.outputs.resourceId}/subnets/${appSubnetName}'

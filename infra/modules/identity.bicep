// The user-assigned managed identity the function app runs as. It is the only principal of the app:
// host storage, the deployment package, the request table, Key Vault and Application Insights all
// authenticate with it (no keys, no connection strings). Being user-assigned, its role assignments
// exist before the app starts and survive re-creating the app.

@description('Name of the user-assigned managed identity.')
param name string

param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId

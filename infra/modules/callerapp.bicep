// The API's own app registration (Microsoft Graph Bicep extension, see infra/bicepconfig.json):
// what callers get tokens for. Its Application ID URI is the token audience (CALLER_AUDIENCES),
// and its two app roles are what each route checks (shared/api/caller_auth.py):
//   ProductUpgrades.Submit  POST an upgrade, subscribe/unsubscribe callbacks (cancel/retry later)
//   ProductUpgrades.Read    GET a request, upgrade status, eligibility, lists
// Both roles can be assigned to users (and groups) and to applications (a Power Automate
// connector's app, a webhook sender's app, a managed identity): see docs/security.md.
// The service principal requires an assignment, so nobody without a role even gets a token.
extension microsoftGraphV1

@description('Unique name of the registration in the tenant (the Graph extension\'s idempotency key).')
param uniqueName string

param displayName string

@description('Application ID URI, e.g. api://csp-upgrades: the audience of caller tokens.')
param applicationIdUri string

@description('Seed of the stable GUIDs of the roles and the delegated scope.')
param idSeed string

resource callerApp 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: 'AzureADMyOrg'
  identifierUris: [
    applicationIdUri
  ]
  api: {
    requestedAccessTokenVersion: 2
    // The delegated scope a signed-in user's client (the Power Automate connector) asks for; what
    // the user may do is still decided by the app roles assigned to them.
    oauth2PermissionScopes: [
      {
        id: guid(idSeed, 'user_impersonation')
        value: 'user_impersonation'
        type: 'User'
        isEnabled: true
        adminConsentDisplayName: 'Use the CSP product upgrade API as the signed-in user'
        adminConsentDescription: 'Lets the client call the CSP product upgrade API as the signed-in user, within the app roles assigned to that user.'
        userConsentDisplayName: 'Use the CSP product upgrade API as you'
        userConsentDescription: 'Lets the client call the CSP product upgrade API as you, within the roles you are assigned.'
      }
    ]
  }
  appRoles: [
    {
      id: guid(idSeed, 'ProductUpgrades.Submit')
      value: 'ProductUpgrades.Submit'
      displayName: 'Submit product upgrades'
      description: 'Submit CSP customer upgrades to Azure plan and manage their completion callbacks.'
      allowedMemberTypes: [
        'User'
        'Application'
      ]
      isEnabled: true
    }
    {
      id: guid(idSeed, 'ProductUpgrades.Read')
      value: 'ProductUpgrades.Read'
      displayName: 'Read product upgrades'
      description: 'Read upgrade requests, upgrade status and customer eligibility.'
      allowedMemberTypes: [
        'User'
        'Application'
      ]
      isEnabled: true
    }
  ]
}

resource callerServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: callerApp.appId
  appRoleAssignmentRequired: true
}

output clientId string = callerApp.appId
output applicationIdUri string = applicationIdUri
output audiences string = '${applicationIdUri},${callerApp.appId}'
output servicePrincipalId string = callerServicePrincipal.id

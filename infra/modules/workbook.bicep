// The campaign dashboard: an Azure Monitor workbook over the function app's Application Insights.
// Its queries read the app's log lines (traces); tests/test_workbook.py checks that every field a
// query uses is one the code logs. Open it: portal > the Application Insights resource >
// Workbooks > "Azure plan upgrade campaign" (see docs/campaigns.md).

param applicationInsightsId string
param location string
param tags object

@description('Shown in the portal.')
param displayName string = 'Azure plan upgrade campaign'

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(applicationInsightsId, 'upgrade-campaign-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: applicationInsightsId
    serializedData: loadTextContent('../workbooks/upgrade-campaign.workbook.json')
    version: 'Notebook/1.0'
  }
}

output workbookId string = workbook.id

# The official Python management SDK (Debian python3-azure: azure.mgmt.resource) deploys a template by link:
# `REQUESTS_CA_BUNDLE=<ca.pem> /usr/bin/python3 deploy_py.py '<json>'`. Prints one JSON object of what it saw.
import json, sys
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.mgmt.resource import ResourceManagementClient

a = json.loads(sys.argv[1])
cred = ClientSecretCredential(tenant_id='adfs', client_id=a['clientId'], client_secret=a['clientSecret'], authority=a['origin'], disable_instance_discovery=True)
rm = ResourceManagementClient(cred, a['subscriptionId'], base_url=a['origin'], credential_scopes=[a['origin'] + '/.default'], polling_interval=1)
out = {}
dep = {'properties': {'mode': 'Incremental', 'templateLink': {'uri': a['uri']}, 'parameters': {'VirtualMachineName': {'value': a['vm']}}}}
v = rm.deployments.begin_validate(a['rg'], 'dep-py', dep).result()
out['validate'] = {'state': v.properties.provisioning_state, 'resources': [r.id.split('/')[-1] for r in v.properties.validated_resources]}
d = rm.deployments.begin_create_or_update(a['rg'], 'dep-py', dep).result()
out['create'] = {'state': d.properties.provisioning_state, 'resources': [r.id.split('/')[-1] for r in d.properties.output_resources]}
bad = []
for uri in a['badUris']:
    try:
        rm.deployments.begin_validate(a['rg'], 'dep-bad', {'properties': {'mode': 'Incremental', 'templateLink': {'uri': uri}}}).result()
        bad.append('no error')
    except HttpResponseError as e:
        bad.append({'status': e.status_code, 'code': e.error.code if e.error else None, 'message': e.error.message if e.error else str(e)})
out['bad'] = bad
print(json.dumps(out))

"""Debian python3-azure (track-2 mgmt SDKs) against rsvault; driven by test/wire-python-sdk.test.ts.

Usage: /usr/bin/python3 wire_sdk.py <command> '<json args>'   (REQUESTS_CA_BUNDLE = the installation CA)
Prints one JSON object on stdout. Every HTTP response the SDK sees is recorded (method, path, status, Retry-After,
the status field of operation-status bodies) so the test can check how the poller was told to wait.
"""
import json
import sys
import time
from urllib.parse import urlparse

from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential

args = json.loads(sys.argv[2])
origin = args['origin']
cred = ClientSecretCredential(tenant_id='adfs', client_id=args['clientId'], client_secret=args['clientSecret'],
                              authority=origin, disable_instance_discovery=True)
common = dict(base_url=origin, credential_scopes=['https://management.core.windows.net/.default'])
sub = args['subscriptionId']
log = []


def hook(response):
    r = response.http_response
    entry = {'method': r.request.method, 'path': urlparse(r.request.url).path, 'status': r.status_code,
             'retryAfter': r.headers.get('Retry-After')}
    if 'operationStatuses' in entry['path'] or 'operationsStatus' in entry['path'] or '/backupOperations/' in entry['path']:
        try:
            entry['opStatus'] = json.loads(r.text()).get('status')
        except Exception:  # noqa: BLE001 - a body that is not JSON is recorded without a status
            pass
    log.append(entry)


def out(**kw):
    print(json.dumps({**kw, 'log': log}))


def error_of(e):
    return {'status': e.status_code, 'code': getattr(e.error, 'code', None), 'message': getattr(e.error, 'message', str(e))}


cmd = sys.argv[1]
if cmd == 'disk-and-storage':
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.storage import StorageManagementClient
    compute = ComputeManagementClient(cred, sub, **common)
    t0 = time.monotonic()
    disk = compute.disks.begin_create_or_update(args['rg'], args['disk'], {
        'location': 'local', 'disk_size_gb': 1, 'creation_data': {'create_option': 'Empty'}}, raw_response_hook=hook).result()
    disk_s = time.monotonic() - t0
    storage = StorageManagementClient(cred, sub, **common)
    t0 = time.monotonic()
    sa = storage.storage_accounts.begin_create(args['rg'], args['account'], {
        'location': 'local', 'sku': {'name': 'Standard_LRS'}, 'kind': 'StorageV2'}, raw_response_hook=hook).result()
    sa_s = time.monotonic() - t0
    # a second PUT of the same disk (an update) is answered the same way
    again = compute.disks.begin_create_or_update(args['rg'], args['disk'], {
        'location': 'local', 'disk_size_gb': 1, 'creation_data': {'create_option': 'Empty'}, 'tags': {'k': 'v'}},
        raw_response_hook=hook).result()
    out(disk={'name': disk.name, 'sizeGB': disk.disk_size_gb, 'state': disk.provisioning_state, 'tags': again.tags},
        diskSeconds=disk_s, account={'name': sa.name, 'state': sa.provisioning_state}, accountSeconds=sa_s,
        apiVersions={'disks': compute.disks._config.api_version if hasattr(compute.disks, '_config') else None})
elif cmd == 'ade':
    from azure.mgmt.compute import ComputeManagementClient
    compute = ComputeManagementClient(cred, sub, **common)
    t0 = time.monotonic()
    ext = compute.virtual_machine_extensions.begin_create_or_update(args['rg'], args['vm'], 'AzureDiskEncryptionForLinux', {
        'location': 'local', 'publisher': 'Microsoft.Azure.Security', 'type_properties_type': 'AzureDiskEncryptionForLinux',
        'type_handler_version': '1.1', 'settings': args['settings']}, raw_response_hook=hook).result()
    out(state=ext.provisioning_state, seconds=time.monotonic() - t0)
elif cmd == 'encryption-config':
    from azure.mgmt.recoveryservicesbackup.activestamp import RecoveryServicesBackupClient
    from azure.mgmt.recoveryservicesbackup.activestamp.models import BackupResourceEncryptionConfigResource, BackupResourceEncryptionConfig
    bk = RecoveryServicesBackupClient(cred, sub, **common)
    v, rg = args['vault'], args['rg']
    before = bk.backup_resource_encryption_configs.get(v, rg).as_dict()
    errors = {}
    try:
        bk.backup_resource_encryption_configs.update(v, rg, BackupResourceEncryptionConfigResource(properties=BackupResourceEncryptionConfig(
            encryption_at_rest_type='CustomerManaged', key_uri=args['missingKeyUri'])))
    except HttpResponseError as e:
        errors['missingVault'] = error_of(e)
    res = bk.backup_resource_encryption_configs.update(v, rg, BackupResourceEncryptionConfigResource(properties=BackupResourceEncryptionConfig(
        encryption_at_rest_type='CustomerManaged', key_uri=args['keyUri'], infrastructure_encryption_state='Enabled')))
    after = bk.backup_resource_encryption_configs.get(v, rg).as_dict()
    for name, props in [('revert', dict(encryption_at_rest_type='MicrosoftManaged')),
                        ('infra', dict(encryption_at_rest_type='CustomerManaged', key_uri=args['keyUri'], infrastructure_encryption_state='Disabled'))]:
        try:
            bk.backup_resource_encryption_configs.update(v, rg, BackupResourceEncryptionConfigResource(properties=BackupResourceEncryptionConfig(**props)))
        except HttpResponseError as e:
            errors[name] = error_of(e)
    out(before=before, after=after, updateReturned=res, errors=errors)
else:
    raise SystemExit('unknown command ' + cmd)

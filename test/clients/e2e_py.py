# The whole encrypted-VM backup-and-restore flow with the official Python Azure SDKs only (Debian python3-azure:
# azure.identity, azure.mgmt.resource/compute/keyvault/storage/recoveryservices/recoveryservicesbackup,
# azure.keyvault.keys, azure.storage.blob), as a user runs it:
# `REQUESTS_CA_BUNDLE=<ca.pem> /usr/bin/python3 e2e_py.py '<json>'`. Guest bytes go through rsvault's guest I/O API
# (no Azure client has one), sent with azure.core's pipeline. Prints one JSON object: the steps that passed, what
# each saw, and, if a step threw, which one and why.
import hashlib, json, sys, time, traceback
from datetime import datetime, timedelta, timezone
from azure.core import PipelineClient
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.rest import HttpRequest
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.recoveryservices import RecoveryServicesClient
from azure.mgmt.recoveryservicesbackup.activestamp import RecoveryServicesBackupClient
from azure.mgmt.resource import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient
from azure.storage.blob import BlobServiceClient

a = json.loads(sys.argv[1])
out = {'steps': [], 'ms': {}}
o = a['origin']
cred = ClientSecretCredential(tenant_id='adfs', client_id=a['clientId'], client_secret=a['clientSecret'], authority=o, disable_instance_discovery=True)
arm = dict(base_url=o, credential_scopes=[o + '/.default'], polling_interval=1)
sub = a['sub']
rm = ResourceManagementClient(cred, sub, **arm)
kvm = KeyVaultManagementClient(cred, sub, **arm)
cp = ComputeManagementClient(cred, sub, **arm)
st = StorageManagementClient(cred, sub, **arm)
rs = RecoveryServicesClient(cred, sub, **arm)
bk = RecoveryServicesBackupClient(cred, sub, **arm)
raw = PipelineClient(o, policies=[BearerTokenCredentialPolicy(cred, o + '/.default')])
rg, kv, vm, rsv, sa = a['rg'], a['kv'], a['vm'], a['rsv'], a['sa']
rg_id = f'/subscriptions/{sub}/resourceGroups/{rg}'
vm_id = f'{rg_id}/providers/Microsoft.Compute/virtualMachines/{vm}'
kv_id = f'{rg_id}/providers/Microsoft.KeyVault/vaults/{kv}'
container = f'IaasVMContainer;iaasvmcontainerv2;{rg};{vm}'
item = f'VM;iaasvmcontainerv2;{rg};{vm}'


def guest(name, op, offset, data=None, length=None):
    q = f'api-version=2022-08-01&osDisk=true&offset={offset}' + (f'&length={length}' if length else '')
    r = raw.send_request(HttpRequest('POST', f'{o}{rg_id}/providers/Microsoft.Compute/virtualMachines/{name}/guestIo/{op}?{q}', content=data or b'', headers={'content-type': 'application/octet-stream'}))
    if r.status_code != 200:
        raise RuntimeError(f'guest {op}: {r.status_code} {r.text()}')
    return r.content


def step(name, fn):
    t0 = time.time()
    r = fn()
    out['steps'].append(name)
    out['ms'][name] = int((time.time() - t0) * 1000)
    print(f'{name} {out["ms"][name]} ms', file=sys.stderr, flush=True)
    if r is not None:
        out[name] = r
    return r


def async_url():
    """A raw_response_hook that keeps the Azure-AsyncOperation header of the call's (first) answer."""
    box = {}
    def hook(resp):
        h = resp.http_response.headers.get('Azure-AsyncOperation')
        if h and 'url' not in box:
            box['url'] = h
    return box, hook


def wait_job(job_id):
    for _ in range(1200):
        j = bk.job_details.get(rsv, rg, job_id)
        if j.properties.status not in ('InProgress', 'Cancelling'):
            return j
        time.sleep(0.2)
    raise RuntimeError(f'job {job_id} did not finish')


def job_of(url):
    op_id = url.split('?')[0].rstrip('/').split('/')[-1]
    for _ in range(600):
        s = bk.backup_operation_statuses.get(rsv, rg, op_id)
        if s.status != 'InProgress':
            if s.status != 'Succeeded':
                raise RuntimeError(f'operation {s.status}: {s.error}')
            return wait_job(s.properties.job_id)
        time.sleep(0.2)
    raise RuntimeError('operation did not finish')


try:
    step('group', lambda: rm.resource_groups.create_or_update(rg, {'location': 'local'}).properties.provisioning_state)

    def key_vault():
        # The Backup Management Service's object id, from Graph (as `az ad sp show --id 262044b1-…` finds it).
        r = raw.send_request(HttpRequest('GET', f"{o}/v1.0/servicePrincipals", params={'$filter': "appId eq '262044b1-e2ce-469f-a196-69ab7ada62d3'"}))
        bms = r.json()['value'][0]['id']
        perms = lambda k, s: {'keys': k, 'secrets': s}
        v = kvm.vaults.begin_create_or_update(rg, kv, {'location': 'local', 'properties': {
            'tenant_id': a['tenantId'], 'sku': {'family': 'A', 'name': 'standard'}, 'enabled_for_disk_encryption': True,
            'access_policies': [
                {'tenant_id': a['tenantId'], 'object_id': a['objectId'], 'permissions': perms(['all'], ['all'])},
                {'tenant_id': a['tenantId'], 'object_id': bms, 'permissions': perms(['get', 'list', 'backup'], ['get', 'list', 'backup'])},
            ]}}).result()
        return {'vaultUri': v.properties.vault_uri, 'enabledForDiskEncryption': v.properties.enabled_for_disk_encryption}
    step('keyVault', key_vault)
    vault_url = out['keyVault']['vaultUri'].rstrip('/')
    kek = step('kek', lambda: KeyClient(vault_url, cred).create_rsa_key('kek', size=2048).id)

    def make_vm():
        def disk(n, src, os_type=None):
            body = {'location': 'local', 'creation_data': {'create_option': 'Import', 'source_uri': src}}
            if os_type:
                body['os_type'] = os_type
            return cp.disks.begin_create_or_update(rg, n, body).result().id
        os_id = disk(f'{vm}-os', a['osImage'], 'Linux')
        data_id = disk(f'{vm}-data', a['dataImage'])
        v = cp.virtual_machines.begin_create_or_update(rg, vm, {'location': 'local', 'hardware_profile': {'vm_size': 'Standard_DS1_v2'}, 'storage_profile': {
            'os_disk': {'os_type': 'Linux', 'create_option': 'Attach', 'managed_disk': {'id': os_id}},
            'data_disks': [{'lun': 0, 'create_option': 'Attach', 'managed_disk': {'id': data_id}}]}}).result()
        return {'state': v.provisioning_state, 'disks': 1 + len(v.storage_profile.data_disks)}
    step('vm', make_vm)

    def encrypt():
        e = cp.virtual_machine_extensions.begin_create_or_update(rg, vm, 'AzureDiskEncryptionForLinux', {
            'location': 'local', 'publisher': 'Microsoft.Azure.Security', 'type_properties_type': 'AzureDiskEncryptionForLinux', 'type_handler_version': '1.1',
            'settings': {'EncryptionOperation': 'EnableEncryption', 'KeyVaultURL': vault_url + '/', 'KeyVaultResourceId': kv_id, 'KeyEncryptionKeyURL': kek,
                         'KekVaultResourceId': kv_id, 'KeyEncryptionAlgorithm': 'RSA-OAEP', 'VolumeType': 'All'}}).result()
        iv = cp.virtual_machines.instance_view(rg, vm)
        return {'state': e.provisioning_state, 'diskEncrypted': [bool(d.encryption_settings and d.encryption_settings[0].enabled) for d in iv.disks or []]}
    step('encrypt', encrypt)
    step('guestWrite1', lambda: guest(vm, 'write', a['off1'], bytes.fromhex(a['bytes1'])) and None)

    step('vault', lambda: rs.vaults.begin_create_or_update(rg, rsv, {'location': 'local', 'sku': {'name': 'Standard'}, 'properties': {'public_network_access': 'Enabled'}}).result().properties.provisioning_state)

    def protect():
        policy = bk.protection_policies.get(rsv, rg, 'DefaultPolicy')
        box, hook = async_url()
        bk.protected_items.create_or_update(rsv, rg, 'Azure', container, item, {'properties': {'protected_item_type': 'Microsoft.Compute/virtualMachines', 'source_resource_id': vm_id, 'policy_id': policy.id}}, raw_response_hook=hook)
        op_id = box['url'].split('?')[0].split('/')[-1]
        for _ in range(600):
            if bk.protected_item_operation_statuses.get(rsv, rg, 'Azure', container, item, op_id).status != 'InProgress':
                break
            time.sleep(0.1)
        return bk.protected_items.get(rsv, rg, 'Azure', container, item).properties.protection_state
    step('protect', protect)

    def backup():
        box, hook = async_url()
        bk.backups.trigger(rsv, rg, 'Azure', container, item, {'properties': {'object_type': 'IaasVMBackupRequest', 'recovery_point_expiry_time_in_utc': datetime.now(timezone.utc) + timedelta(days=30)}}, raw_response_hook=hook)
        j = job_of(box['url'])
        return {'status': j.properties.status, 'bag': j.properties.extended_info.property_bag if j.properties.extended_info else {}}
    step('backup1', backup)
    step('guestWrite2', lambda: guest(vm, 'write', a['off2'], bytes.fromhex(a['bytes2'])) and None)
    step('backup2', backup)
    rps = step('recoveryPoints', lambda: sorted([{'name': p.name, 'time': p.properties.recovery_point_time.isoformat(), 'encrypted': p.properties.is_source_vm_encrypted} for p in bk.recovery_points.list(rsv, rg, 'Azure', container, item)], key=lambda p: p['time'], reverse=True))

    step('storageAccount', lambda: st.storage_accounts.begin_create(rg, sa, {'location': 'local', 'sku': {'name': 'Standard_LRS'}, 'kind': 'StorageV2'}).result().provisioning_state)

    def restore():
        box, hook = async_url()
        rp = rps[0]['name']
        bk.restores.begin_trigger(rsv, rg, 'Azure', container, item, rp, {'properties': {
            'object_type': 'IaasVMRestoreRequest', 'recovery_point_id': rp, 'recovery_type': 'RestoreDisks', 'source_resource_id': vm_id,
            'storage_account_id': f'{rg_id}/providers/Microsoft.Storage/storageAccounts/{sa}', 'region': 'local', 'original_storage_account_option': False,
            'encryption_details': {'encryption_enabled': True}}}, raw_response_hook=hook).result()
        j = job_of(box['url'])
        if j.properties.status != 'Completed':
            raise RuntimeError(f'restore job {j.properties.status}: {j.properties.error_details}')
        return j.properties.extended_info.property_bag
    bag = step('restoreDisks', restore)

    def download():
        cc = BlobServiceClient(f"https://{sa}.blob.localhost:{a['port']}", credential=cred).get_container_client(bag['Config Blob Container Name'])
        names = sorted(b.name for b in cc.list_blobs())
        text = lambda n: cc.get_blob_client(n).download_blob().readall().decode('utf-8')
        config = json.loads(text(bag['Config Blob Name']))
        tpl = text(bag['Template Blob Uri'].split('/')[-1])
        osb = cc.get_blob_client(bag['OS Disk Blob Uri'].split('/')[-1])
        vhd = osb.download_blob().readall()
        head = osb.download_blob(offset=0, length=6).readall()
        return {'blobs': names, 'configVmName': config.get('name'), 'vhdBytes': len(vhd), 'vhdSha': hashlib.sha256(vhd).hexdigest(), 'vhdHead': head.hex(), 'template': tpl}
    dl = step('download', download)
    template = dl.pop('template')

    def deploy():
        d = rm.deployments.begin_create_or_update(rg, 'restore-py', {'properties': {'mode': 'Incremental', 'template': json.loads(template), 'parameters': {'VirtualMachineName': {'value': a['restoredVm']}}}}).result()
        return {'state': d.properties.provisioning_state, 'resources': [r.id.split('/')[-1] for r in d.properties.output_resources]}
    step('deploy', deploy)

    def start():
        cp.virtual_machines.begin_start(rg, a['restoredVm']).result()
        return [s.code for s in cp.virtual_machines.instance_view(rg, a['restoredVm']).statuses]
    step('start', start)
    step('guestRead', lambda: {
        'bytes1': guest(a['restoredVm'], 'read', a['off1'], length=len(a['bytes1']) // 2).hex(),
        'bytes2': guest(a['restoredVm'], 'read', a['off2'], length=len(a['bytes2']) // 2).hex(),
    })
except Exception as e:  # report which step failed and why, with what passed before it
    out['failed'] = {'after': out['steps'][-1] if out['steps'] else None, 'error': ''.join(traceback.format_exception(e))[-3000:]}
print(json.dumps(out, default=str))

# The official Python Storage SDK (Debian python3-azure: azure.storage.blob) against rsvault's blob plane, as a user
# runs it: `REQUESTS_CA_BUNDLE=<data dir>/tls/ca.pem /usr/bin/python3 blob_py.py '<json>'`. Prints one JSON object.
import hashlib, json, sys
from datetime import datetime, timedelta, timezone
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.storage.blob import BlobServiceClient, BlobClient, BlobSasPermissions, generate_blob_sas

a = json.loads(sys.argv[1])
sha = lambda b: hashlib.sha256(b).hexdigest()
out = {}

def err(e):
    return {'statusCode': e.status_code, 'code': e.error_code}

def exercise(label, service):
    r = {}
    r['containers'] = [c.name for c in service.list_containers()]
    cc = service.get_container_client(a['container'])
    r['containerExists'] = cc.exists()
    r['blobs'] = [{'name': b.name, 'size': b.size} for b in cc.list_blobs()]
    r['pages'] = [[b.name for b in page] for page in cc.list_blobs(results_per_page=1).by_page()]
    r['prefixed'] = [b.name for b in cc.list_blobs(name_starts_with='azuredeploy-')]
    disk = cc.get_blob_client(a['osBlob'])
    p = disk.get_blob_properties()
    r['props'] = {'size': p.size, 'etag': p.etag, 'blobType': str(p.blob_type)}
    r['diskSha'] = sha(disk.download_blob().readall())
    r['range'] = {'hex': disk.download_blob(offset=a['offset'], length=a['count']).readall().hex()}
    r['template'] = cc.get_blob_client(a['templateBlob']).download_blob().readall().decode('utf-8')
    try:
        disk.download_blob(offset=a['size'] + 100, length=10).readall()
        r['badRange'] = 'no error'
    except HttpResponseError as e:
        r['badRange'] = err(e)
    out[label] = r

cred = ClientSecretCredential(tenant_id='adfs', client_id=a['clientId'], client_secret=a['clientSecret'], authority=a['authority'], disable_instance_discovery=True)
exercise('bearer', BlobServiceClient(a['endpoint'], credential=cred))
exercise('sharedKey', BlobServiceClient(a['endpoint'], credential={'account_name': a['account'], 'account_key': a['accountKey']}))

sas = {}
via_server = BlobClient.from_blob_url(a['osSasUrl'])
sas['serverSha'] = sha(via_server.download_blob().readall())
sas['serverRange'] = {'hex': via_server.download_blob(offset=a['offset'], length=a['count']).readall().hex()}
sas['templateViaServerSas'] = BlobClient.from_blob_url(a['templateSasUrl']).download_blob().readall().decode('utf-8')
token = generate_blob_sas(a['account'], a['container'], a['osBlob'], account_key=a['accountKey'], permission=BlobSasPermissions(read=True), expiry=datetime.now(timezone.utc) + timedelta(hours=1))
sas['sdkSha'] = sha(BlobClient.from_blob_url(a['endpoint'] + a['container'] + '/' + a['osBlob'] + '?' + token).download_blob().readall())
out['sas'] = sas
print(json.dumps(out))

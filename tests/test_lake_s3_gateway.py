"""The lake's S3 gateway used by real S3 clients -- boto3, s3fs and pyarrow -- against `mlinfra lake serve` in its own process,
with the lake's own access keys and policies."""
import hashlib, http.client, io, os, socket, subprocess, sys, time, urllib.request
import boto3, botocore.auth, botocore.awsrequest, botocore.config, botocore.credentials, botocore.exceptions, httpx, pytest, s3fs
import pandas as pd, pyarrow as pa, pyarrow.fs as pafs, pyarrow.parquet as pq
from boto3.s3.transfer import TransferConfig
from mlinfra_nb.lake import Lake
from mlinfra_nb.lake.auth import create_credentials, create_user
from mlinfra_nb.lake.s3 import multipart_etag

MAX_UPLOAD = 16 * 2**20
MIB = 2**20

def free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def gateway(tmp_path_factory):
    "`mlinfra lake serve` on a free port of 127.0.0.1 over a lake with a repository, an admin (alice) and a viewer (bob); stopped by pid."
    root = tmp_path_factory.mktemp('s3')/'lake'
    lake = Lake(root, user='setup')
    alice = create_credentials(lake, 'alice')                       # the lake's first user: an Admin
    create_user(lake, 'bob', groups=['Viewers']); bob = create_credentials(lake, 'bob')   # reads, lists; no fs:WriteObject
    lake.create_repository('sales')
    lake.store.close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(('MLINFRA_', 'LAKEFS_', 'AWS_'))}
    env['MLINFRA_HOME'] = str(root.parent/'home')
    proc = subprocess.Popen([sys.executable, '-m', 'mlinfra_nb.cli', 'lake', 'serve', '--root', str(root), '--port', str(port),
                             '--max-upload', str(MAX_UPLOAD)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert '(S3 gateway: http://127.0.0.1:' in line, (line, proc.stderr.read() if proc.poll() is not None else '')
        yield dict(lake=lake, port=port, endpoint=f'http://127.0.0.1:{port}', alice=alice, bob=bob, pid=proc.pid)
    finally:
        os.kill(proc.pid, 15); proc.wait(30)
        lake.store.close()

def client(g, who='alice', secret=None):
    c = g[who]
    return boto3.client('s3', endpoint_url=g['endpoint'], aws_access_key_id=c.access_key_id, aws_secret_access_key=secret or c.secret_access_key,
                        region_name='us-east-1', config=botocore.config.Config(s3={'addressing_style': 'path'}, signature_version='s3v4',
                                                                                retries={'max_attempts': 1}))

def error_of(f)->tuple[str, int, str]:
    try: f()
    except botocore.exceptions.ClientError as e: return e.response['Error']['Code'], e.response['ResponseMetadata']['HTTPStatusCode'], e.response['Error'].get('Message', '')
    raise AssertionError("the call succeeded")

def staged(g, repo='sales', branch='main')->list:
    return [(c.type, c.path) for c in g['lake'].repository(repo).uncommitted(branch)]

# --- boto3 ---------------------------------------------------------------------------------------------

def test_boto3_objects(gateway):
    s3, repo = client(gateway), gateway['lake'].repository('sales')
    body = b'order,amount\n1,9.5\n2,3.0\n'
    put = s3.put_object(Bucket='sales', Key='main/orders/day1.csv', Body=body, ContentType='text/csv', Metadata={'origin': 'pos'})
    assert put['ETag'] == f'"{hashlib.md5(body).hexdigest()}"'
    assert repo.get('main', 'orders/day1.csv') == body and repo.stat('main', 'orders/day1.csv').content_type == 'text/csv'
    got = s3.get_object(Bucket='sales', Key='main/orders/day1.csv')
    assert (got['Body'].read(), got['ContentType'], got['Metadata'], got['ETag']) == (body, 'text/csv', {'origin': 'pos'}, put['ETag'])
    part = s3.get_object(Bucket='sales', Key='main/orders/day1.csv', Range='bytes=6-11')
    assert part['ResponseMetadata']['HTTPStatusCode'] == 206 and part['Body'].read() == body[6:12]
    assert part['ContentRange'] == f'bytes 6-11/{len(body)}'
    assert s3.get_object(Bucket='sales', Key='main/orders/day1.csv', Range='bytes=-4')['Body'].read() == body[-4:]
    assert error_of(lambda: s3.get_object(Bucket='sales', Key='main/orders/day1.csv', Range=f'bytes={len(body)}-'))[:2] == ('InvalidRange', 416)
    head = s3.head_object(Bucket='sales', Key='main/orders/day1.csv')
    assert (head['ContentLength'], head['ETag']) == (len(body), put['ETag'])
    s3.copy_object(Bucket='sales', Key='main/archive/day1.csv', CopySource={'Bucket': 'sales', 'Key': 'main/orders/day1.csv'})
    assert repo.get('main', 'archive/day1.csv') == body and repo.stat('main', 'archive/day1.csv').metadata == {'origin': 'pos'}
    s3.delete_object(Bucket='sales', Key='main/archive/day1.csv')
    assert not repo.exists('main', 'archive/day1.csv')
    assert s3.delete_object(Bucket='sales', Key='main/archive/never-there')['ResponseMetadata']['HTTPStatusCode'] == 204
    assert error_of(lambda: s3.head_object(Bucket='sales', Key='main/archive/day1.csv'))[:2] == ('404', 404)

def test_boto3_listing(gateway):
    s3, repo = client(gateway), gateway['lake'].repository('sales')
    repo.put_many('main', {f'listing/{d}/f{i:02d}.txt': b'x' * i for d in ('a', 'b') for i in range(7)} | {'listing/top.txt': b't'})
    page = s3.list_objects_v2(Bucket='sales', Prefix='main/listing/', Delimiter='/')
    assert [c['Prefix'] for c in page['CommonPrefixes']] == ['main/listing/a/', 'main/listing/b/']
    assert [(o['Key'], o['Size']) for o in page['Contents']] == [('main/listing/top.txt', 1)]
    pages = list(s3.get_paginator('list_objects_v2').paginate(Bucket='sales', Prefix='main/listing/a/', PaginationConfig={'PageSize': 3}))
    assert [len(p['Contents']) for p in pages] == [3, 3, 1]
    assert [o['Key'] for p in pages for o in p['Contents']] == [f'main/listing/a/f{i:02d}.txt' for i in range(7)]
    after = s3.list_objects_v2(Bucket='sales', Prefix='main/listing/a/', StartAfter='main/listing/a/f04.txt')
    assert [o['Key'] for o in after['Contents']] == ['main/listing/a/f05.txt', 'main/listing/a/f06.txt']
    few = s3.list_objects_v2(Bucket='sales', Prefix='main/listing/', MaxKeys=2)
    assert few['IsTruncated'] and few['KeyCount'] == 2
    v1 = list(s3.get_paginator('list_objects').paginate(Bucket='sales', Prefix='main/listing/b/', PaginationConfig={'PageSize': 4}))
    assert [o['Key'] for p in v1 for o in p['Contents']] == [f'main/listing/b/f{i:02d}.txt' for i in range(7)]
    assert [c['Prefix'] for c in s3.list_objects_v2(Bucket='sales', Delimiter='/')['CommonPrefixes']] == ['main/']   # branches, as lakeFS
    assert s3.list_objects_v2(Bucket='sales', Prefix='nobranch/')['KeyCount'] == 0
    assert [b['Name'] for b in s3.list_buckets()['Buckets']] == ['sales']
    assert s3.head_bucket(Bucket='sales')['ResponseMetadata']['HTTPStatusCode'] == 200

def test_boto3_delete_objects(gateway):
    s3, repo = client(gateway), gateway['lake'].repository('sales')
    repo.put_many('main', {'bulk/1': b'1', 'bulk/2': b'2', 'bulk/3': b'3'})
    out = s3.delete_objects(Bucket='sales', Delete={'Objects': [{'Key': 'main/bulk/1'}, {'Key': 'main/bulk/2'}, {'Key': 'main/bulk/missing'}]})
    assert sorted(d['Key'] for d in out['Deleted']) == ['main/bulk/1', 'main/bulk/2', 'main/bulk/missing'] and not out.get('Errors')
    assert [o.path for o in repo.list('main', prefix='bulk/')] == ['bulk/3']

def test_boto3_multipart(gateway, tmp_path):
    s3, repo = client(gateway), gateway['lake'].repository('sales')
    data = os.urandom(12 * MIB + 12345)
    (tmp_path/'big.bin').write_bytes(data)
    cfg = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=3)
    s3.upload_file(str(tmp_path/'big.bin'), 'sales', 'main/blobs/big.bin', Config=cfg)
    assert repo.get('main', 'blobs/big.bin') == data
    parts = [data[i:i + 5 * MIB] for i in range(0, len(data), 5 * MIB)]
    assert s3.head_object(Bucket='sales', Key='main/blobs/big.bin')['ContentLength'] == len(data)
    s3.download_file('sales', 'main/blobs/big.bin', str(tmp_path/'back.bin'), Config=cfg)   # ranged GETs in parallel
    assert (tmp_path/'back.bin').read_bytes() == data
    s3.copy({'Bucket': 'sales', 'Key': 'main/blobs/big.bin'}, 'sales', 'main/blobs/big-copy.bin', Config=cfg)   # UploadPartCopy, part by part
    assert repo.get('main', 'blobs/big-copy.bin') == data
    # the low-level calls: nothing is visible until Complete, whose ETag is S3's multipart form
    up = s3.create_multipart_upload(Bucket='sales', Key='main/blobs/low.bin', ContentType='application/x-test')['UploadId']
    etags = [s3.upload_part(Bucket='sales', Key='main/blobs/low.bin', UploadId=up, PartNumber=n + 1, Body=p)['ETag'] for n, p in enumerate(parts)]
    assert etags == [f'"{hashlib.md5(p).hexdigest()}"' for p in parts]
    assert [p['PartNumber'] for p in s3.list_parts(Bucket='sales', Key='main/blobs/low.bin', UploadId=up)['Parts']] == [1, 2, 3]
    assert not repo.exists('main', 'blobs/low.bin')
    wrong = [{'PartNumber': 2, 'ETag': etags[1]}, {'PartNumber': 1, 'ETag': etags[0]}]
    assert error_of(lambda: s3.complete_multipart_upload(Bucket='sales', Key='main/blobs/low.bin', UploadId=up, MultipartUpload={'Parts': wrong}))[:2] == ('InvalidPartOrder', 400)
    done = s3.complete_multipart_upload(Bucket='sales', Key='main/blobs/low.bin', UploadId=up,
                                        MultipartUpload={'Parts': [{'PartNumber': n + 1, 'ETag': e} for n, e in enumerate(etags)]})
    assert done['ETag'] == f'"{multipart_etag([hashlib.md5(p).digest() for p in parts])}"' and done['ETag'].endswith('-3"')
    assert repo.get('main', 'blobs/low.bin') == data and repo.stat('main', 'blobs/low.bin').content_type == 'application/x-test'
    assert error_of(lambda: s3.list_parts(Bucket='sales', Key='main/blobs/low.bin', UploadId=up))[:2] == ('NoSuchUpload', 404)

def test_presigned_url(gateway):
    s3 = client(gateway)
    s3.put_object(Bucket='sales', Key='main/presigned.txt', Body=b'shared')
    url = s3.generate_presigned_url('get_object', Params={'Bucket': 'sales', 'Key': 'main/presigned.txt'}, ExpiresIn=120)
    assert urllib.request.urlopen(url).read() == b'shared'
    with pytest.raises(urllib.error.HTTPError) as e: urllib.request.urlopen(url.replace('presigned.txt', 'other.txt'))
    assert e.value.code == 403 and b'SignatureDoesNotMatch' in e.value.read()

# --- s3fs and pyarrow ----------------------------------------------------------------------------------

def test_s3fs(gateway):
    fs = s3fs.S3FileSystem(key=gateway['alice'].access_key_id, secret=gateway['alice'].secret_access_key,
                           endpoint_url=gateway['endpoint'], client_kwargs={'region_name': 'us-east-1'}, skip_instance_cache=True)
    with fs.open('s3://sales/main/fsspec/notes.txt', 'wb') as f: f.write(b'written by s3fs\n')
    fs.pipe('s3://sales/main/fsspec/sub/more.bin', b'\x00\x01' * 1000)
    assert gateway['lake'].repository('sales').get('main', 'fsspec/notes.txt') == b'written by s3fs\n'
    assert fs.ls('s3://sales/main/fsspec/', detail=False) == ['sales/main/fsspec/notes.txt', 'sales/main/fsspec/sub']
    with fs.open('s3://sales/main/fsspec/notes.txt', 'rb') as f: f.seek(11); assert f.read() == b's3fs\n'
    assert fs.info('s3://sales/main/fsspec/sub/more.bin')['size'] == 2000
    assert fs.cat('s3://sales/main/fsspec/sub/more.bin', start=2, end=6) == b'\x00\x01\x00\x01'
    fs.rm('s3://sales/main/fsspec/', recursive=True)
    assert gateway['lake'].repository('sales').list('main', prefix='fsspec/') == []

def arrow_fs(g)->pafs.S3FileSystem:
    return pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{g['port']}", scheme='http', access_key=g['alice'].access_key_id,
                             secret_key=g['alice'].secret_access_key, region='us-east-1')

def test_pyarrow_reads_a_lake_table(gateway):
    lake = Lake(gateway['lake'].root, user='writer'); repo = lake.repository('sales')
    df = pd.DataFrame({'store': ['a', 'b', 'c', 'a'], 'amount': [1.5, 2.0, 3.25, 4.0]})
    repo.create_branch('tables', 'main')
    repo.write_table('tables', 'tables/revenue', df)
    commit = repo.commit('tables', 'revenue table')
    fs = arrow_fs(gateway)
    for ref in ('tables', commit.id):
        got = pq.read_table(f'sales/{ref}/tables/revenue', filesystem=fs).to_pandas()   # the directory: its Parquet parts (and `_table.json` skipped)
        pd.testing.assert_frame_equal(got.sort_values('amount').reset_index(drop=True), df.sort_values('amount').reset_index(drop=True))
    infos = fs.get_file_info(pafs.FileSelector('sales/tables/tables/revenue'))
    assert any(i.path.endswith('.parquet') for i in infos)

def test_pyarrow_writes_what_the_lake_reads(gateway):
    fs = arrow_fs(gateway)
    t = pa.table({'id': list(range(1000)), 'score': [i / 7 for i in range(1000)]})
    pq.write_table(t, 'sales/main/arrow/scores.parquet', filesystem=fs)
    lake = Lake(gateway['lake'].root, user='reader')
    assert pq.read_table(io.BytesIO(lake.repository('sales').get('main', 'arrow/scores.parquet'))).equals(t)
    with fs.open_output_stream('sales/main/arrow/big.bin') as f: f.write(b'z' * (11 * MIB))   # over pyarrow's part size: a multipart upload
    assert lake.repository('sales').get('main', 'arrow/big.bin') == b'z' * (11 * MIB)

# --- refusals ------------------------------------------------------------------------------------------

def test_wrong_secret_and_unknown_bucket(gateway):
    assert error_of(lambda: client(gateway, secret='not-the-secret').list_objects_v2(Bucket='sales'))[:2] == ('SignatureDoesNotMatch', 403)
    assert error_of(lambda: client(gateway).get_object(Bucket='no-such-repo', Key='main/x'))[:2] == ('NoSuchBucket', 404)
    assert error_of(lambda: client(gateway).put_object(Bucket='no-such-repo', Key='main/x', Body=b'x'))[:2] == ('NoSuchBucket', 404)
    assert error_of(lambda: client(gateway).get_object(Bucket='sales', Key='main/not-there'))[:2] == ('NoSuchKey', 404)
    fake = boto3.client('s3', endpoint_url=gateway['endpoint'], aws_access_key_id='AKIANOSUCHKEY0000000', aws_secret_access_key='x',
                        region_name='us-east-1', config=botocore.config.Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}))
    assert error_of(lambda: fake.list_buckets())[:2] == ('InvalidAccessKeyId', 403)

def test_writes_to_tags_commits_and_protected_branches_are_refused(gateway):
    lake = Lake(gateway['lake'].root, user='setup'); repo = lake.repository('sales')
    repo.put('main', 'refs/base.txt', b'base'); c = repo.commit('main', 'base')
    repo.tag('release', c.id)
    s3 = client(gateway)
    for ref in ('release', c.id):
        code, status, msg = error_of(lambda: s3.put_object(Bucket='sales', Key=f'{ref}/refs/new.txt', Body=b'new'))
        assert (code, status) == ('NoSuchBucket', 404) and 'S3 writes go to a branch' in msg
        assert error_of(lambda: s3.delete_object(Bucket='sales', Key=f'{ref}/refs/base.txt'))[:2] == ('NoSuchBucket', 404)
        assert s3.get_object(Bucket='sales', Key=f'{ref}/refs/base.txt')['Body'].read() == b'base'   # reading a tag or commit is fine
    repo.create_branch('guarded', 'main'); repo.protect('guarded')
    code, status, msg = error_of(lambda: s3.put_object(Bucket='sales', Key='guarded/refs/new.txt', Body=b'new'))
    assert (code, status) == ('ErrWriteToProtectedBranch', 403) and 'protected' in msg
    assert staged(gateway, branch='guarded') == []

def test_denied_user_changes_nothing(gateway):
    lake = Lake(gateway['lake'].root, user='setup'); repo = lake.repository('sales')
    repo.put('main', 'viewer/seen.txt', b'seen')
    bob = client(gateway, 'bob')
    assert bob.get_object(Bucket='sales', Key='main/viewer/seen.txt')['Body'].read() == b'seen'   # Viewers read and list
    assert error_of(lambda: bob.put_object(Bucket='sales', Key='main/viewer/new.txt', Body=b'no'))[:2] == ('AccessDenied', 403)
    assert error_of(lambda: bob.delete_object(Bucket='sales', Key='main/viewer/seen.txt'))[:2] == ('AccessDenied', 403)
    assert error_of(lambda: bob.create_multipart_upload(Bucket='sales', Key='main/viewer/mp.bin'))[:2] == ('AccessDenied', 403)
    assert error_of(lambda: bob.copy_object(Bucket='sales', Key='main/viewer/copy.txt', CopySource='sales/main/viewer/seen.txt'))[:2] == ('AccessDenied', 403)
    out = bob.delete_objects(Bucket='sales', Delete={'Objects': [{'Key': 'main/viewer/seen.txt'}]})
    assert [(e['Key'], e['Code']) for e in out['Errors']] == [('main/viewer/seen.txt', 'AccessDenied')] and not out.get('Deleted')
    assert repo.get('main', 'viewer/seen.txt') == b'seen' and not repo.exists('main', 'viewer/new.txt')

def test_upload_over_the_limit_is_refused_before_its_body(gateway):
    "A PUT declaring more than --max-upload is answered EntityTooLarge without the server waiting for (or reading) its body."
    c = gateway['alice']
    req = botocore.awsrequest.AWSRequest('PUT', f"{gateway['endpoint']}/sales/main/huge.bin",
                                         headers={'Content-Length': str(MAX_UPLOAD + 1), 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD'})
    botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(c.access_key_id, c.secret_access_key), 's3', 'us-east-1').add_auth(req)
    conn = http.client.HTTPConnection('127.0.0.1', gateway['port'], timeout=10)
    conn.putrequest('PUT', '/sales/main/huge.bin', skip_accept_encoding=True)
    for k, v in req.headers.items(): conn.putheader(k, v)
    conn.endheaders()                                       # headers only: not one byte of the body is sent
    r = conn.getresponse(); body = r.read(); conn.close()
    assert r.status == 400 and b'<Code>EntityTooLarge</Code>' in body, body
    assert error_of(lambda: client(gateway).put_object(Bucket='sales', Key='main/huge.bin', Body=b'x' * (MAX_UPLOAD + 1)))[:2] == ('EntityTooLarge', 400)
    assert not gateway['lake'].repository('sales').exists('main', 'huge.bin')

def test_unfinished_multipart_uploads_leave_nothing(gateway):
    lake = Lake(gateway['lake'].root, user='setup'); repo = lake.repository('sales')
    repo.create_branch('uploads', 'main')
    s3 = client(gateway)
    aborted = s3.create_multipart_upload(Bucket='sales', Key='uploads/a.bin')['UploadId']
    s3.upload_part(Bucket='sales', Key='uploads/a.bin', UploadId=aborted, PartNumber=1, Body=b'a' * 1000)
    s3.abort_multipart_upload(Bucket='sales', Key='uploads/a.bin', UploadId=aborted)
    assert error_of(lambda: s3.upload_part(Bucket='sales', Key='uploads/a.bin', UploadId=aborted, PartNumber=2, Body=b'a'))[:2] == ('NoSuchUpload', 404)
    left = s3.create_multipart_upload(Bucket='sales', Key='uploads/b.bin')['UploadId']
    s3.upload_part(Bucket='sales', Key='uploads/b.bin', UploadId=left, PartNumber=1, Body=b'b' * 1000)
    assert staged(gateway, branch='uploads') == []                 # never completed: nothing staged
    tmp = lake.root/'tmp'
    assert sorted(p.name for p in tmp.glob(f'mpu-{left}*')) == [f'mpu-{left}-00001.part', f'mpu-{left}.json']
    assert not list(tmp.glob(f'mpu-{aborted}*'))
    assert lake.gc(grace=0)['temp_files'] >= 2                     # the lake's gc removes what an upload left behind
    assert not list(tmp.glob(f'mpu-{left}*'))
    assert error_of(lambda: s3.complete_multipart_upload(Bucket='sales', Key='uploads/b.bin', UploadId=left,
                                                         MultipartUpload={'Parts': [{'PartNumber': 1, 'ETag': 'x'}]}))[:2] == ('NoSuchUpload', 404)
    assert staged(gateway, branch='uploads') == []

def test_key_made_before_secrets_were_kept(gateway):
    "A key with no sealed secret is refused, saying why, until it is used once with its secret on the lakeFS API."
    lake = Lake(gateway['lake'].root, user='setup')
    old = create_credentials(lake, 'alice')
    with lake.store.transaction() as con: con.execute("DELETE FROM credential_secrets WHERE access_key_id = ?", [old.access_key_id])
    s3 = boto3.client('s3', endpoint_url=gateway['endpoint'], aws_access_key_id=old.access_key_id, aws_secret_access_key=old.secret_access_key,
                      region_name='us-east-1', config=botocore.config.Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}))
    code, status, msg = error_of(lambda: s3.list_buckets())
    assert (code, status) == ('InvalidAccessKeyId', 403) and 'use it once' in msg and 'lakeFS API' in msg
    r = httpx.get(f"{gateway['endpoint']}/api/v1/user", auth=(old.access_key_id, old.secret_access_key))
    assert r.status_code == 200
    assert [b['Name'] for b in s3.list_buckets()['Buckets']] == ['sales']

def test_tampered_payload_is_refused(gateway):
    "A body that does not match its signed SHA-256 is refused (XAmzContentSHA256Mismatch) and nothing is stored."
    c = gateway['alice']
    req = botocore.awsrequest.AWSRequest('PUT', f"{gateway['endpoint']}/sales/main/tampered.txt", data=b'original')
    botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(c.access_key_id, c.secret_access_key), 's3', 'us-east-1').add_auth(req)
    assert req.headers['x-amz-content-sha256'] == hashlib.sha256(b'original').hexdigest()
    r = httpx.put(req.url, headers=dict(req.headers.items()), content=b'tampered')
    assert r.status_code == 400 and '<Code>XAmzContentSHA256Mismatch</Code>' in r.text
    assert not gateway['lake'].repository('sales').exists('main', 'tampered.txt')

def test_encrypted_lake_keeps_parts_sealed(tmp_path):
    "In a lake encrypted at rest, an upload's parts wait in tmp/ sealed too: no plain copy of the content is on disk."
    from mlinfra_nb.lake.server import LakeServer
    from mlinfra_nb.lake.store import generate_key
    lake = Lake(tmp_path/'sealed', user='setup', key=generate_key())
    cred = create_credentials(lake, 'alice'); lake.create_repository('vault')
    secret_part = b'top-secret-row;' * 400
    with LakeServer(lake) as srv:
        s3 = boto3.client('s3', endpoint_url=srv.endpoint, aws_access_key_id=cred.access_key_id, aws_secret_access_key=cred.secret_access_key,
                          region_name='us-east-1', config=botocore.config.Config(s3={'addressing_style': 'path'}))
        up = s3.create_multipart_upload(Bucket='vault', Key='main/rows.txt')['UploadId']
        etag = s3.upload_part(Bucket='vault', Key='main/rows.txt', UploadId=up, PartNumber=1, Body=secret_part)['ETag']
        files = list((lake.root/'tmp').glob(f'mpu-{up}*'))
        assert len(files) == 2 and not any(b'top-secret-row' in f.read_bytes() for f in files)
        s3.complete_multipart_upload(Bucket='vault', Key='main/rows.txt', UploadId=up, MultipartUpload={'Parts': [{'PartNumber': 1, 'ETag': etag}]})
        assert s3.get_object(Bucket='vault', Key='main/rows.txt')['Body'].read() == secret_part
    lake.store.close()

def test_keys_with_odd_characters(gateway):
    "Keys with spaces, non-ASCII letters, '?', '&', '=', '%', '+', '~' and parentheses sign, store, read and list as given."
    s3, repo = client(gateway), gateway['lake'].repository('sales')
    keys = ['odd/ä b+c.txt', 'odd/q?x=1&y.txt', 'odd/pct%41.txt', 'odd/tilde~*(x).txt']
    for k in keys:
        s3.put_object(Bucket='sales', Key=f'main/{k}', Body=k.encode())
        assert repo.get('main', k) == k.encode() and s3.get_object(Bucket='sales', Key=f'main/{k}')['Body'].read() == k.encode()
    assert [o['Key'] for o in s3.list_objects_v2(Bucket='sales', Prefix='main/odd/')['Contents']] == sorted(f'main/{k}' for k in keys)
    s3.copy_object(Bucket='sales', Key='main/odd/copy of ä.txt', CopySource={'Bucket': 'sales', 'Key': 'main/odd/q?x=1&y.txt'})
    assert repo.get('main', 'odd/copy of ä.txt') == b'odd/q?x=1&y.txt'

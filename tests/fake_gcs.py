"""An in-memory Google Cloud Storage for offline tests of `gs://` workdirs.

One process-local server speaks the subset of the GCS JSON API that the three clients of a
workdir use: tensorstore (orbax's arrays; `TENSORSTORE_GCS_HTTP_URL`), google-cloud-storage
(orbax's bucket checks; `STORAGE_EMULATOR_HOST`) and TensorFlow's GCS filesystem (etils epath,
clu's event files, TensorBoard's reader). TensorFlow's endpoint is fixed to
https://www.googleapis.com and https://storage.googleapis.com, so its requests reach the server
through a local HTTPS proxy (`https_proxy`) that terminates TLS with a self-signed certificate
trusted through `CURL_CA_BUNDLE`. Nothing leaves the machine.

  with FakeGcs(tmp_dir) as gcs:
    subprocess.run([...], env=gcs.environment())
"""
import http.server
import itertools
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse

_API = '/storage/v1/b/'
_UPLOAD = '/upload/storage/v1/b/'


class _Bucket:
  """Objects of one bucket: name → (data, generation)."""

  def __init__(self):
    self.objects = {}
    self.lock = threading.Lock()


class _Handler(http.server.BaseHTTPRequestHandler):
  protocol_version = 'HTTP/1.1'
  server_version = 'FakeGcs'

  def log_message(self, *args):
    del args

  # --- plumbing -------------------------------------------------------------------------------
  def _body(self):
    if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
      data = b''
      while True:
        size = int(self.rfile.readline().split(b';')[0], 16)
        chunk = self.rfile.read(size)
        self.rfile.readline()
        if not size:
          return data
        data += chunk
    return self.rfile.read(int(self.headers.get('Content-Length', 0)))

  def _send(self, status, body=b'', headers=()):
    if isinstance(body, (dict, list)):
      body = json.dumps(body).encode()
      headers = (('Content-Type', 'application/json'),) + tuple(headers)
    self.send_response(status)
    for key, value in headers:
      self.send_header(key, value)
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(body)

  def _error(self, status, message):
    self._send(status, {'error': {'code': status, 'message': message}})

  def _parsed(self):
    url = urllib.parse.urlsplit(self.path)
    return url.path, {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}

  def _bucket(self, name):
    return self.server.buckets.setdefault(name, _Bucket())

  def _resource(self, bucket, name):
    data, generation = self._bucket(bucket).objects[name]
    return {'kind': 'storage#object', 'bucket': bucket, 'name': name, 'id': f'{bucket}/{name}',
            'size': str(len(data)), 'generation': str(generation), 'metageneration': '1',
            'updated': self.server.started, 'timeCreated': self.server.started,
            'contentType': 'application/octet-stream'}

  def _precondition_fails(self, bucket, name, query):
    current = self._bucket(bucket).objects.get(name, (None, 0))[1]
    if 'ifGenerationMatch' in query and int(query['ifGenerationMatch']) != current:
      self._error(412, 'precondition failed')
      return True
    return False

  def _store(self, bucket, name, data, query):
    with self._bucket(bucket).lock:
      if self._precondition_fails(bucket, name, query):
        return
      self._bucket(bucket).objects[name] = (data, next(self.server.generations))
    self._send(200, self._resource(bucket, name))

  def _media(self, bucket, name, query):
    objects = self._bucket(bucket).objects
    if name not in objects:
      return self._error(404, f'no such object: {bucket}/{name}')
    data, generation = objects[name]
    if 'ifGenerationMatch' in query and int(query['ifGenerationMatch']) != generation:
      return self._error(412, 'precondition failed')
    if 'ifGenerationNotMatch' in query and int(query['ifGenerationNotMatch']) == generation:
      return self._send(304, headers=[('x-goog-generation', str(generation))])
    headers = [('x-goog-generation', str(generation)), ('x-goog-metageneration', '1'),
               ('ETag', f'"{generation}"'), ('Content-Type', 'application/octet-stream')]
    byte_range = self.headers.get('Range')
    if not byte_range:
      return self._send(200, data, headers)
    first, last = byte_range.split('=')[1].split('-')
    if not first:
      first, last = max(len(data) - int(last), 0), len(data) - 1
    first, last = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
    if first >= len(data):
      return self._send(416, headers=[('Content-Range', f'bytes */{len(data)}')])
    self._send(206, data[first:last + 1],
               headers + [('Content-Range', f'bytes {first}-{last}/{len(data)}')])

  # --- methods --------------------------------------------------------------------------------
  def do_HEAD(self):
    self.do_GET()

  def do_GET(self):
    path, query = self._parsed()
    if path.startswith(_API):
      parts = path[len(_API):].split('/', 2)
      bucket = parts[0]
      if len(parts) == 1:
        return self._send(200, {'kind': 'storage#bucket', 'name': bucket, 'id': bucket,
                                'location': 'US', 'storageClass': 'STANDARD'})
      if len(parts) == 2:
        return self._list(bucket, query)
      name = urllib.parse.unquote(parts[2])
      if query.get('alt') == 'media':
        return self._media(bucket, name, query)
      if name not in self._bucket(bucket).objects:
        return self._error(404, f'no such object: {bucket}/{name}')
      return self._send(200, self._resource(bucket, name))
    bucket, _, name = path.lstrip('/').partition('/')  # storage.googleapis.com/<bucket>/<name>
    return self._media(bucket, urllib.parse.unquote(name), query)

  def _list(self, bucket, query):
    prefix, delimiter = query.get('prefix', ''), query.get('delimiter')
    names = sorted(n for n in self._bucket(bucket).objects
                   if n.startswith(prefix) and n >= query.get('startOffset', '')
                   and ('endOffset' not in query or n < query['endOffset']))
    items, prefixes = [], []
    for name in names:
      rest = name[len(prefix):]
      if delimiter and delimiter in rest:
        common = prefix + rest.split(delimiter)[0] + delimiter
        if common not in prefixes:
          prefixes.append(common)
      else:
        items.append(name)
    entries = [(n, False) for n in items] + [(p, True) for p in prefixes]
    entries.sort()
    start = query.get('pageToken', '')
    entries = [e for e in entries if e[0] > start] if start else entries
    limit = int(query.get('maxResults', 1000))
    page, more = entries[:limit], len(entries) > limit
    body = {'kind': 'storage#objects',
            'items': [self._resource(bucket, n) for n, is_prefix in page if not is_prefix],
            'prefixes': [n for n, is_prefix in page if is_prefix]}
    if more:
      body['nextPageToken'] = page[-1][0]
    self._send(200, body)

  def do_DELETE(self):
    path, query = self._parsed()
    bucket, _, name = path[len(_API):].partition('/o/')
    name = urllib.parse.unquote(name)
    with self._bucket(bucket).lock:
      if name not in self._bucket(bucket).objects:
        return self._error(404, f'no such object: {bucket}/{name}')
      if self._precondition_fails(bucket, name, query):
        return
      del self._bucket(bucket).objects[name]
    self._send(204)

  def do_POST(self):
    path, query = self._parsed()
    body = self._body()
    if path.startswith(_UPLOAD):
      bucket = path[len(_UPLOAD):].split('/')[0]
      kind = query.get('uploadType')
      if kind == 'media':
        return self._store(bucket, query['name'], body, query)
      if kind == 'resumable':
        name = query.get('name') or json.loads(body or b'{}')['name']
        upload_id = str(next(self.server.generations))
        self.server.uploads[upload_id] = (bucket, name, query, bytearray())
        host = self.headers.get('Host', '')
        scheme = 'http' if host.startswith(('127.0.0.1', 'localhost')) else 'https'
        location = (f'{scheme}://{host}{_UPLOAD}{bucket}/o?uploadType=resumable&'
                    f'upload_id={upload_id}')
        return self._send(200, headers=[('Location', location)])
      return self._error(400, f'unsupported uploadType {kind}')
    source, _, target = path[len(_API):].partition('/o/')
    if '/rewriteTo/b/' in target or '/copyTo/b/' in target:
      name, _, target = target.partition('/rewriteTo/b/') if '/rewriteTo/b/' in target else (
          target.partition('/copyTo/b/'))
      target_bucket, _, target_name = target.partition('/o/')
      name, target_name = urllib.parse.unquote(name), urllib.parse.unquote(target_name)
      if name not in self._bucket(source).objects:
        return self._error(404, f'no such object: {source}/{name}')
      data = self._bucket(source).objects[name][0]
      self._bucket(target_bucket).objects[target_name] = (data, next(self.server.generations))
      resource = self._resource(target_bucket, target_name)
      if 'rewriteTo' in path:
        resource = {'kind': 'storage#rewriteResponse', 'done': True, 'resource': resource,
                    'totalBytesRewritten': str(len(data)), 'objectSize': str(len(data))}
      return self._send(200, resource)
    if target.endswith('/compose'):
      name = urllib.parse.unquote(target[:-len('/compose')])
      parts = [self._bucket(source).objects[s['name']][0]
               for s in json.loads(body)['sourceObjects']]
      return self._store(source, name, b''.join(parts), query)
    return self._error(400, f'unsupported request POST {path}')

  def do_PUT(self):
    _, query = self._parsed()
    body = self._body()
    upload = self.server.uploads.get(query.get('upload_id'))
    if upload is None:
      return self._error(404, 'no such upload')
    bucket, name, upload_query, data = upload
    content_range = self.headers.get('Content-Range', f'bytes */{len(body)}')
    first_last, _, total = content_range.split(' ')[1].partition('/')
    if first_last != '*':
      first = int(first_last.split('-')[0])
      del data[first:]
      data.extend(body)
    if total != '*' and len(data) == int(total):
      del self.server.uploads[query['upload_id']]
      return self._store(bucket, name, bytes(data), upload_query)
    headers = [('Range', f'bytes=0-{len(data) - 1}')] if data else []
    self._send(308, headers=headers)


def _pipe(source, sink):
  try:
    while data := source.recv(65536):
      sink.sendall(data)
  except OSError:
    pass
  finally:
    for end in (source, sink):
      try:
        end.shutdown(socket.SHUT_RDWR)
      except OSError:
        pass


class FakeGcs:
  """Server and TLS proxy on free local ports, for the lifetime of a `with` block."""

  def __init__(self, directory):
    self.directory = str(directory)
    self.certificate = os.path.join(self.directory, 'fake_gcs_cert.pem')

  def __enter__(self):
    key = os.path.join(self.directory, 'fake_gcs_key.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
                    '-keyout', key, '-out', self.certificate, '-subj', '/CN=www.googleapis.com',
                    '-addext', 'subjectAltName=DNS:www.googleapis.com,DNS:storage.googleapis.com',
                    '-addext', 'basicConstraints=critical,CA:TRUE'],
                   check=True, capture_output=True)
    self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    self.server.daemon_threads = True
    self.server.buckets, self.server.uploads = {}, {}
    self.server.generations = itertools.count(1)
    self.server.started = time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime())
    threading.Thread(target=self.server.serve_forever, daemon=True).start()
    self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    self.tls.load_cert_chain(self.certificate, key)
    self.tls.set_alpn_protocols(['http/1.1'])
    self.proxy = socket.create_server(('127.0.0.1', 0))
    threading.Thread(target=self._accept, daemon=True).start()
    return self

  def _accept(self):
    while True:
      try:
        client, _ = self.proxy.accept()
      except OSError:
        return
      threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

  def _tunnel(self, client):
    """Answers CONNECT, terminates TLS and forwards the plain HTTP to the server."""
    try:
      request = b''
      while b'\r\n\r\n' not in request:
        request += client.recv(4096) or b'\r\n\r\n'
      client.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')
      client = self.tls.wrap_socket(client, server_side=True)
      upstream = socket.create_connection(self.server.server_address)
    except (OSError, ssl.SSLError):
      client.close()
      return
    threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
    _pipe(upstream, client)

  def __exit__(self, *exc):
    self.server.shutdown()
    self.proxy.close()

  def objects(self, bucket):
    """Names of the objects in `bucket`, sorted."""
    return sorted(self.server.buckets.get(bucket, _Bucket()).objects)

  def read(self, bucket, name):
    return self.server.buckets[bucket].objects[name][0]

  def put(self, bucket, name, data):
    """Stores an object directly, as an upload would."""
    self.server.buckets.setdefault(bucket, _Bucket()).objects[name] = (
        data, next(self.server.generations))

  def environment(self):
    """os.environ plus what points every GCS client of a subprocess at this server."""
    url = 'http://%s:%d' % self.server.server_address
    return dict(os.environ, https_proxy='http://127.0.0.1:%d' % self.proxy.getsockname()[1],
                no_proxy='127.0.0.1,localhost', CURL_CA_BUNDLE=self.certificate,
                GOOGLE_AUTH_TOKEN_FOR_TESTING='offline', TENSORSTORE_GCS_HTTP_URL=url,
                STORAGE_EMULATOR_HOST=url, GOOGLE_CLOUD_PROJECT='offline')


def openssl_available():
  return shutil.which('openssl') is not None
